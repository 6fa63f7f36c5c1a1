"""Opaque page and resume tokens: a keyset cursor bound to the query it came from."""

import base64
import hashlib
import json

from server.core import limits


def query_digest(*parts: object) -> str:
    """A short digest of a query's parent and filters; a token only continues the query it was made for."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode(cursor: int, query: str) -> str:
    raw = json.dumps({"c": cursor, "q": query}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, query: str) -> int:
    """The cursor in `token`; ValueError when it is malformed or was made for another query."""
    if len(token) > limits.PAGE_TOKEN:  # refused before any decoding work
        raise ValueError("is not a token this service issued")
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        cursor, token_query = data["c"], data["q"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("is not a token this service issued") from None
    if not isinstance(cursor, int) or token_query != query:
        raise ValueError("was issued for a different parent or different filters")
    if not 0 <= cursor < 2**63:  # a hand-made token must not reach the database as an out-of-range id
        raise ValueError("is not a token this service issued")
    return cursor
