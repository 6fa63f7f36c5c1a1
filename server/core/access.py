"""API keys and what they allow: key format and hashing, kinds, scopes, the game, event-kind and origin checks.
No I/O."""

import hashlib
import re
import secrets
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from server.core import limits

KEY_PREFIX = "pbk_"
_KEY_ID_HEX_CHARS = 8
_BEARER = re.compile(r"bearer\s+(\S+)\s*", re.IGNORECASE)
_WELL_FORMED_KEY = re.compile(KEY_PREFIX + r"[0-9a-f]{8}_[A-Za-z0-9_-]{43}")
# The first path segment of every resource name this API takes: `games/{game}` or `games/{game}/...`.
_GAME_OF_NAME = re.compile(r"games/([^/]*)")


class KeyKind(StrEnum):
    INGEST = "ingest"  # a game's servers and SDKs: events of exactly one game
    ADMIN = "admin"  # the settings backend and support: configs, logs, erasure, settings; all or listed games
    DEVELOPMENT = "development"  # everything, every game; honoured only by a server started in development mode
    # Public, embedded in web pages and game clients: the events a browser or a game client observes, for one game,
    # from its listed origins, over the HTTP API only.
    PUBLISHABLE = "publishable"


class Scope(StrEnum):
    EVENTS = "events"  # send events and read conversions back
    ADMIN = "admin"  # configs and credentials, delivery logs, erasure, game settings
    CLIENT_EVENTS = "client_events"  # send the events a client observes; read nothing


SCOPES_OF_KIND = {
    KeyKind.INGEST: frozenset({Scope.EVENTS}),
    KeyKind.ADMIN: frozenset({Scope.ADMIN}),
    KeyKind.DEVELOPMENT: frozenset({Scope.EVENTS, Scope.ADMIN}),
    KeyKind.PUBLISHABLE: frozenset({Scope.CLIENT_EVENTS}),
}
# What a browser or a game client legitimately observes. A purchase is not among them: anyone can forge what a
# client sends, and a forged purchase would post a conversion with a value back to the ad networks.
CLIENT_EVENT_KINDS = frozenset({"ad_click", "identify", "game_launch"})


@dataclass(frozen=True, slots=True)
class Grant:
    """What one valid, unrevoked key may do. `games` empty means every game."""

    key_id: str
    kind: KeyKind
    games: frozenset[str]
    # Publishable keys: the web origins (`https://www.mygame.com`) whose pages may use the key.
    origins: frozenset[str] = frozenset()

    @property
    def is_publishable(self) -> bool:
        return self.kind == KeyKind.PUBLISHABLE

    def event_kind_denial(self, kinds: Iterable[str | None]) -> str | None:
        """Why this key may not send events of these kinds (a oneof's names; None for an event without one), or
        None when it may. Only publishable keys are limited; an event without a kind is refused as malformed."""
        if not self.is_publishable:
            return None
        refused = sorted({kind for kind in kinds if kind is not None and kind not in CLIENT_EVENT_KINDS})
        if refused:
            return (f"a publishable key may send only {', '.join(sorted(CLIENT_EVENT_KINDS))} events, not "
                    f"{', '.join(refused)}: a client can forge what it sends, so send these from your server with "
                    "an ingest key")
        return None

    def denial(self, allowed_scopes: frozenset[Scope], game: str | None) -> str | None:
        """Why this key may not make a call that needs one of `allowed_scopes` on `game`, or None when it may.
        `game` is None when the request names no game the check can read; the handler then refuses the request
        as malformed, so nothing of any game is reached."""
        if not SCOPES_OF_KIND[self.kind] & allowed_scopes:
            needed = " or ".join(sorted(kind.value for kind, scopes in SCOPES_OF_KIND.items()
                                        if scopes & allowed_scopes
                                        and kind not in (KeyKind.DEVELOPMENT, KeyKind.PUBLISHABLE)))
            return f"{_article(self.kind.value)} {self.kind.value} key may not call this method; it needs " \
                   f"{_article(needed)} {needed} key"
        if self.games and game is not None and game not in self.games:
            covered = ", ".join(f"games/{g}" for g in sorted(self.games))
            return f"this key is not valid for games/{game[:limits.GAME_ID]}; it covers {covered}"
        return None


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def new_key() -> tuple[str, str]:
    """A fresh key and its public id. The id is part of the key, so a leaked key names the key to revoke."""
    key_id = secrets.token_hex(_KEY_ID_HEX_CHARS // 2)
    return f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}", key_id


def key_digest(key: str) -> str:
    """What is stored instead of the key. A plain SHA-256 suffices: the key has 256 random bits, nothing to guess."""
    return hashlib.sha256(key.encode()).hexdigest()


def normalise_key_id(text: str) -> str:
    """Accepts an id as listed (`1a2b3c4d`), with the key prefix (`pbk_1a2b3c4d`) or a whole key."""
    text = text.strip().removeprefix(KEY_PREFIX)
    return text.split("_", 1)[0]


def is_well_formed(key: str) -> bool:
    """Whether `key` has the shape of a key new_key() makes: anything else is refused without a lookup."""
    return _WELL_FORMED_KEY.fullmatch(key) is not None


def bearer_key(authorization: str | None) -> str | None:
    """The key in an `authorization: Bearer <key>` header value, or None."""
    if not authorization:
        return None
    match = _BEARER.fullmatch(authorization.strip())
    return match.group(1) if match else None


def normalise_origin(text: str) -> str | None:
    """A web origin as browsers send it in the `Origin` header (`https://www.mygame.com`, `http://localhost:8000`):
    scheme and host in lower case, the port only when it is not the scheme's default. None when `text` is not an
    http(s) origin: no path, query, fragment or credentials."""
    try:
        parts = urllib.parse.urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or text.strip().endswith(("?", "#")):
        return None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    default_port = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None and port != default_port else "")


def game_of_name(name: str) -> str | None:
    """The game a resource name belongs to, or None when it is not a name under `games/`."""
    match = _GAME_OF_NAME.match(name)
    return match.group(1) if match else None
