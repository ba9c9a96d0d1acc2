"""One real Better Auth (EdDSA, its default) shared by the tests that need no special config."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.betterauth.harness import BetterAuth, better_auth


@pytest.fixture(scope="session")
def eddsa() -> Iterator[BetterAuth]:
    with better_auth("EdDSA") as server:
        yield server
