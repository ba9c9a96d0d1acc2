"""What the lifespan does to the process itself (api/app.py)."""

from __future__ import annotations

import gc

from tests.conftest import make_settings


async def test_the_start_up_heap_is_frozen(database_url: str) -> None:
    """Once started, everything built at start-up is out of the collector's sight
    (gc.freeze), so that a full collection under load scans only the requests' objects: it
    used to take 60-70 ms about once a second, stopping every request in flight
    (loadtest/README.md, "Capacity")."""
    from api.app import create_app

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    app = create_app(make_settings(database_url))
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 10_000  # modules, schemas, the app: far more than that
