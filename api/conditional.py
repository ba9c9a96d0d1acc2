"""ETag, If-None-Match, If-Match and Idempotency-Key: the HTTP side of conditional requests.

Contract, "Conditional requests and safe retries". Tags are strong (RFC 9110 §8.8.1) and read
`"<version>-<16 hex digits>"`: the version is the database's (`tasks.version` for a task,
`users.tasks_version` for a list), so that If-Match can be compared inside the writing
statement; the digits bind it to its resource, to the list's representation (status, sort,
order, limit, offset) and to the JSON format of a task (REPRESENTATION), so a tag is never
current for another resource, another page or an older format.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Final

from fastapi import Depends, Header, HTTPException, Request

from api.binding import from_request
from repositories.models import TaskCreate, TaskPublic

#: Changes every tag when the JSON of a task changes: its schema, plus this number, to be
#: raised by hand when the same schema is serialised differently.
REPRESENTATION: Final = hashlib.blake2b(
    json.dumps([1, TaskPublic.model_json_schema()], sort_keys=True).encode(), digest_size=8
).hexdigest()

_TAG: Final = re.compile(r'(?:W/)?"(?P<version>[0-9]{1,19})-(?P<digest>[0-9a-f]{16})"')
# RFC 9110 §8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text
_ENTITY_TAG: Final = re.compile(r'\s*((?:W/)?"[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')
_MAX_VERSION: Final = 2**63 - 1


def _tag(version: int, *scope: object) -> str:
    # NUL cannot occur in a user id or a query value, so two different scopes never join
    # into the same string.
    digest = hashlib.blake2b(
        "\x00".join(map(str, (REPRESENTATION, version, *scope))).encode(), digest_size=8
    ).hexdigest()
    return f'"{version}-{digest}"'


def task_etag(task_id: int, version: int) -> str:
    """The strong ETag of task `task_id` at `version` (its `tasks.version`)."""
    return _tag(version, "task", task_id)


def list_etag(
    user_id: str, version: int, since: datetime | None, representation: tuple[object, ...]
) -> str:
    """The strong ETag of a user's list at `version` (`users.tasks_version`); `since` (the
    users row's creation) keeps a re-created user's tags apart, `representation` (status,
    sort, order, limit, offset) the tags of different lists of the same tasks."""
    return _tag(version, "list", user_id, since.isoformat() if since else "", *representation)


@dataclass(frozen=True, slots=True)
class TagList:
    """A parsed If-Match / If-None-Match field: `*`, or entity-tags as sent (`W/` kept)."""

    any: bool
    tags: tuple[str, ...]

    def versions(self) -> list[int]:
        """Every version a well-formed tag of ours names (candidates, checked after)."""
        out = []
        for tag in self.tags:
            match = _TAG.fullmatch(tag)
            if match is not None and int(match["version"]) <= _MAX_VERSION:
                out.append(int(match["version"]))
        return out

    def matches_weakly(self, current: str) -> bool:
        """If-None-Match (RFC 9110 §13.1.2): weak comparison, `*` matches any."""
        return self.any or any(tag.removeprefix("W/") == current for tag in self.tags)

    def task_versions(self, task_id: int) -> list[int] | None:
        """If-Match on a task, as the repository takes it (RFC 9110 §13.1.1, strong
        comparison): None for `*` (any existing task), else the versions whose tag is
        exactly one of the listed; empty when none is, so that nothing matches."""
        if self.any:
            return None
        return [v for v in self.versions() if task_etag(task_id, v) in self.tags]


def parse_tags(values: list[str]) -> TagList | None:
    """The If-Match / If-None-Match field (every line of it), or None when absent.

    A field that does not parse as `*` or a list of entity-tags lists no tag (so an If-Match
    with it is never met, and an If-None-Match never matches): RFC 9110 §13.1 gives a
    malformed precondition no other meaning.
    """
    if not values:
        return None
    field = ",".join(values).strip()
    if field == "*":
        return TagList(any=True, tags=())
    tags: list[str] = []
    position = 0
    while position < len(field):
        if field[position] in " ,\t":
            position += 1
            continue
        match = _ENTITY_TAG.match(field, position)
        if match is None:
            return TagList(any=False, tags=())
        tags.append(match[1])
        position = match.end()
    return TagList(any=False, tags=tuple(tags))


# --- the request headers, as FastAPI dependencies (they also document them in OpenAPI) -------


@from_request()
async def if_none_match(
    request: Request,
    _header: Annotated[
        str | None,
        Header(
            alias="If-None-Match",
            description="ETags the client has: 304 (no body) when one is current",
        ),
    ] = None,
) -> TagList | None:
    """The parsed If-None-Match field (`parse_tags`), or None without it; never raises.

    The field is read from `request` rather than `_header`, which holds only the first of several
    lines; `_header` is there for the OpenAPI document.
    """
    return parse_tags(request.headers.getlist("if-none-match"))


@from_request()
async def if_match(
    request: Request,
    _header: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description="Apply only if one of these ETags is the task's current one "
            "(`*`: any existing task); else 412 and nothing changes",
        ),
    ] = None,
) -> TagList | None:
    """The parsed If-Match field (`parse_tags`), or None without it; never raises (a
    malformed field lists no tag, so the write answers 412). Read from `request` for the
    same reason as `if_none_match`."""
    return parse_tags(request.headers.getlist("if-match"))


IDEMPOTENCY_KEY_MAX: Final = 255
_KEY: Final = re.compile(rf"[\x21-\x7e]{{1,{IDEMPOTENCY_KEY_MAX}}}")
_SF_STRING: Final = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
INVALID_KEY_DETAIL: Final = "Idempotency-Key must be 1-255 visible ASCII characters"


@from_request()
async def idempotency_key(
    request: Request,
    _header: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="1-255 visible ASCII characters (a bare value, or an RFC 8941 string "
            "as the IETF draft writes it): a repeat within 24 hours with the same body returns "
            "the first response and creates nothing; another body is 422, a repeat while the "
            "first runs 409",
        ),
    ] = None,
) -> str | None:
    """The key, or None without the header. Raises HTTPException 400 for a malformed key,
    and for several (RFC 9110 §5.3: it is not a list)."""
    values = request.headers.getlist("idempotency-key")
    if not values:
        return None
    if len(values) > 1:
        raise HTTPException(400, INVALID_KEY_DETAIL)
    value = values[0].strip(" \t")
    quoted = _SF_STRING.fullmatch(value)
    if quoted is not None:  # draft-ietf-httpapi-idempotency-key-header: an sf-string
        value = re.sub(r"\\(.)", r"\1", quoted[1])
    if _KEY.fullmatch(value) is None:
        raise HTTPException(400, INVALID_KEY_DETAIL)
    return value


def fingerprint(body: TaskCreate) -> bytes:
    """SHA-256 of the request as the service understands it (the validated title and
    description), so a retry whose JSON differs only in spacing, member order or ignored
    members is the same request."""
    canonical = json.dumps(
        ["POST /api/{user_id}/tasks", body.title, body.description], ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).digest()


IfNoneMatch = Annotated[TagList | None, Depends(if_none_match)]
IfMatch = Annotated[TagList | None, Depends(if_match)]
IdempotencyKey = Annotated[str | None, Depends(idempotency_key)]
