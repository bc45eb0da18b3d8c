"""Replies and parameters that many operations share."""

from __future__ import annotations

from entrypoints.http.api import Param, Reply
from entrypoints.http.schemas import CURSOR, LIMIT, ref

ERROR = ref("Error")


def err(status: int, description: str) -> Reply:
    return Reply(status, description, ERROR)


BAD_JSON = err(400, "The body is not valid JSON.")
UNAUTHENTICATED = err(401, "No valid access token.")
FORBIDDEN = err(403, "The caller's role may not do this.")
NOT_FOUND = err(404, "No such object.")
CONFLICT = err(409, "The change conflicts with the current state.")
PRECONDITION = err(412, "If-Match does not match the current version.")
TOO_LARGE = err(413, "The body is larger than the server accepts.")
MEDIA_TYPE = err(415, "The body is not application/json.")
INVALID = err(422, "A field is missing or wrong; `details.fields` says which.")
THROTTLED = err(429, "Too many attempts; `Retry-After` says when to retry.")
BODY_ERRORS = (BAD_JSON, TOO_LARGE, MEDIA_TYPE, INVALID)

PAGE = (
    Param("limit", LIMIT, "Items per page, 1-100."),
    Param(
        "cursor",
        CURSOR,
        "`meta.next_cursor` of the previous page, exactly as received and with the same query"
        " (sort and filters); opaque: its form may change.",
    ),
)
#: The replies every list has besides its page.
BAD_CURSOR = err(400, "`cursor` is not a cursor of this list with this sort and these filters (`invalid_cursor`).")
TOO_SLOW = err(503, "The read took longer than the server allows (`query_timeout`); narrow it or retry later.")
LIST_ERRORS = (BAD_CURSOR, INVALID, TOO_SLOW)
IF_MATCH = Param(
    "If-Match",
    {"type": "string", "maxLength": 23, "pattern": '^(\\*|(W/)?"v[0-9]{1,18}")$', "examples": ['"v3"']},
    "The ETag you read; the change is refused (412) if the product changed since.",
)
