"""Hypothesis properties of the body validation rules (API contract, "Endpoints").

- title: leading/trailing white space stripped, then 1-200 Unicode code points;
- description: at most 1000 code points, kept as sent;
- control characters other than tab and newline (and lone surrogates): 422;
- unknown fields are ignored, and id/user_id/completed/timestamps cannot be set by a body.
The model properties run many examples in-process; the HTTP ones run fewer through the
real service, so the whole path (JSON decoding, handlers, PostgreSQL) obeys the same rules.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from repositories.models import DESCRIPTION_MAX, TITLE_MAX, TaskCreate, TaskUpdate
from tests.support import auth, new_user_id

ALLOWED_CONTROLS = "\t\n"


def _forbidden(ch: str) -> bool:
    return ch not in ALLOWED_CONTROLS and unicodedata.category(ch) in ("Cc", "Cs")


def expected_title(raw: str) -> str | None:
    """The stored title for `raw`, or None when it must be rejected."""
    title = raw.strip()
    if any(_forbidden(c) for c in title) or not 1 <= len(title) <= TITLE_MAX:
        return None
    return title


def expected_description(raw: str) -> str | None:
    if any(_forbidden(c) for c in raw) or len(raw) > DESCRIPTION_MAX:
        return None
    return raw


# Characters that matter: ASCII, white space (incl. Unicode spaces), controls, accents,
# CJK, astral emoji (one code point, two UTF-16 units, four UTF-8 bytes), lone surrogates.
SPECIAL = st.sampled_from(
    [" ", "\t", "\n", "\r", "\x00", "\x07", "\x1f", "\x7f", "\x85", "\u00a0", "\u2003",
     "\u3000", "é", "\u0301", "漢", "😀", "\U0010ffff", "\ud800", "\u200b"]
)  # fmt: skip
CHARS = st.one_of(st.characters(codec="utf-8"), SPECIAL, st.characters(exclude_categories=()))


@st.composite
def near_limit_text(draw: st.DrawFn, limit: int) -> str:
    """Mostly benign text whose length clusters around `limit`, padded with white space."""
    unit = draw(st.sampled_from(["a", "é", "漢", "😀", "ab "]))
    n = draw(st.integers(min_value=0, max_value=limit + 5))
    body = (unit * n)[: draw(st.integers(min_value=max(0, limit - 3), max_value=limit + 3))]
    pad = st.text(alphabet=" \t\n\u00a0\u3000", max_size=3)
    return draw(pad) + body + draw(pad)


TITLES = st.one_of(st.text(CHARS, max_size=40), near_limit_text(TITLE_MAX))
DESCRIPTIONS = st.one_of(st.text(CHARS, max_size=40), near_limit_text(DESCRIPTION_MAX))
UNKNOWN = st.dictionaries(
    st.sampled_from(["id", "user_id", "completed", "created_at", "updated_at", "owner", "x"]),
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(title=TITLES)
def test_title_rule(title: str) -> None:
    expected = expected_title(title)
    if expected is None:
        with pytest.raises(ValidationError):
            TaskCreate.model_validate({"title": title})
        with pytest.raises(ValidationError):
            TaskUpdate.model_validate({"title": title})
    else:
        assert TaskCreate.model_validate({"title": title}).title == expected
        assert TaskUpdate.model_validate({"title": title}).title == expected


@settings(max_examples=300, deadline=None)
@given(description=DESCRIPTIONS)
def test_description_rule(description: str) -> None:
    expected = expected_description(description)
    body = {"title": "t", "description": description}
    if expected is None:
        with pytest.raises(ValidationError):
            TaskCreate.model_validate(body)
    else:
        assert TaskCreate.model_validate(body).description == expected
        assert TaskUpdate.model_validate({"description": description}).description == expected


@settings(max_examples=200, deadline=None)
@given(extra=UNKNOWN)
def test_unknown_fields_are_ignored(extra: dict[str, Any]) -> None:
    create = TaskCreate.model_validate({**extra, "title": "x"})
    assert create.model_dump() == {"title": "x", "description": None}
    update = TaskUpdate.model_validate({**extra, "description": "d"})
    assert update.model_dump(exclude_unset=True) == {"description": "d"}


# --- the same rules through the running service -------------------------------------------


@pytest.fixture(scope="module")
def http(service_url: str) -> Any:
    with httpx.Client(base_url=service_url, timeout=20.0) as client:
        yield client


def _post_json(client: httpx.Client, path: str, body: Any, headers: dict[str, str]) -> Any:
    # json.dumps escapes lone surrogates (\ud800), which a UTF-8 encoder would refuse.
    return client.post(
        path,
        content=json.dumps(body).encode("ascii"),
        headers={**headers, "Content-Type": "application/json"},
    )


HTTP_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@HTTP_SETTINGS
@given(title=TITLES, description=st.one_of(st.none(), DESCRIPTIONS), extra=UNKNOWN)
def test_create_over_http_follows_the_rules(
    http: httpx.Client, title: str, description: str | None, extra: dict[str, Any]
) -> None:
    user = new_user_id()
    h = auth(user)
    body = {**extra, "title": title, "description": description}
    response = _post_json(http, f"/api/{user}/tasks", body, h)
    want_title = expected_title(title)
    want_description = None if description is None else expected_description(description)
    if want_title is None or (description is not None and want_description is None):
        assert response.status_code == 422, response.text
        payload = response.json()
        assert payload["status_code"] == 422 and payload["errors"]
        return
    assert response.status_code == 201, response.text
    task = response.json()
    assert task["title"] == want_title and task["description"] == want_description
    assert task["user_id"] == user and task["completed"] is False  # the body cannot set them
    stored = http.get(f"/api/{user}/tasks/{task['id']}", headers=h).json()
    assert stored == task


@HTTP_SETTINGS
@given(title=TITLES)
def test_update_over_http_follows_the_rules(http: httpx.Client, title: str) -> None:
    user = new_user_id()
    h = auth(user)
    created = _post_json(http, f"/api/{user}/tasks", {"title": "before"}, h).json()
    path = f"/api/{user}/tasks/{created['id']}"
    response = http.put(
        path,
        content=json.dumps({"title": title}).encode("ascii"),
        headers={**h, "Content-Type": "application/json"},
    )
    expected = expected_title(title)
    if expected is None:
        assert response.status_code == 422, response.text
        assert http.get(path, headers=h).json()["title"] == "before"
    else:
        assert response.status_code == 200, response.text
        assert response.json()["title"] == expected
