"""API key rules: key shape, the bearer header, the game a name belongs to, and what a grant allows."""

import pytest

from server.core.access import (
    Grant,
    KeyKind,
    Scope,
    bearer_key,
    game_of_name,
    is_well_formed,
    key_digest,
    new_key,
    normalise_key_id,
    normalise_origin,
)

EVENTS, ADMIN = frozenset({Scope.EVENTS}), frozenset({Scope.ADMIN})
CLIENT = frozenset({Scope.CLIENT_EVENTS})
PUBLISHABLE = Grant("k", KeyKind.PUBLISHABLE, frozenset({"a"}), frozenset({"https://www.mygame.com"}))


def test_a_new_key_is_well_formed_carries_its_id_and_is_stored_as_a_digest() -> None:
    key, key_id = new_key()
    assert is_well_formed(key)
    assert key.startswith(f"pbk_{key_id}_")
    assert normalise_key_id(key) == normalise_key_id(f"pbk_{key_id}") == normalise_key_id(f" {key_id} ") == key_id
    assert key_digest(key) != key and len(key_digest(key)) == 64
    assert new_key()[0] != key


@pytest.mark.parametrize(("header", "key"), [
    ("Bearer abc", "abc"), ("bearer   abc ", "abc"), ("BEARER abc", "abc"),
    (None, None), ("", None), ("Basic abc", None), ("Bearer", None), ("Bearer a b", None), ("abc", None),
])
def test_bearer_key(header: str | None, key: str | None) -> None:
    assert bearer_key(header) == key


@pytest.mark.parametrize(("name", "game"), [
    ("games/a", "a"), ("games/a/postbackConfigs/x", "a"), ("games/a/conversions/e", "a"), ("games/", ""),
    ("games/a\n", "a\n"), ("", None), ("game/a", None), ("x/games/a", None),
])
def test_game_of_name(name: str, game: str | None) -> None:
    assert game_of_name(name) == game


@pytest.mark.parametrize(("grant", "scopes", "game", "allowed"), [
    (Grant("k", KeyKind.INGEST, frozenset({"a"})), EVENTS, "a", True),
    (Grant("k", KeyKind.INGEST, frozenset({"a"})), EVENTS, "b", False),
    (Grant("k", KeyKind.INGEST, frozenset({"a"})), EVENTS, "a\n", False),
    (Grant("k", KeyKind.INGEST, frozenset({"a"})), ADMIN, "a", False),
    (Grant("k", KeyKind.INGEST, frozenset({"a"})), EVENTS | ADMIN, "a", True),
    (Grant("k", KeyKind.ADMIN, frozenset({"a", "c"})), ADMIN, "c", True),
    (Grant("k", KeyKind.ADMIN, frozenset({"a", "c"})), ADMIN, "b", False),
    (Grant("k", KeyKind.ADMIN, frozenset()), ADMIN, "anything", True),
    (Grant("k", KeyKind.ADMIN, frozenset()), EVENTS, "a", False),
    (Grant("k", KeyKind.DEVELOPMENT, frozenset()), EVENTS, "a", True),
    (Grant("k", KeyKind.DEVELOPMENT, frozenset()), ADMIN, "a", True),
    (PUBLISHABLE, EVENTS | CLIENT, "a", True),
    (PUBLISHABLE, EVENTS | CLIENT, "b", False),
    (PUBLISHABLE, EVENTS, "a", False),  # reads (GetConversion) are for ingest and admin keys
    (PUBLISHABLE, ADMIN, "a", False),
    (Grant("k", KeyKind.INGEST, frozenset({"a"})), EVENTS | CLIENT, "a", True),
    # No readable game: the handler refuses the request as malformed, whatever the key.
    (Grant("k", KeyKind.INGEST, frozenset({"a"})), EVENTS, None, True),
])
def test_what_a_grant_allows(grant: Grant, scopes: frozenset[Scope], game: str | None, allowed: bool) -> None:
    assert (grant.denial(scopes, game) is None) == allowed


def test_denials_say_what_is_missing() -> None:
    ingest = Grant("k", KeyKind.INGEST, frozenset({"a"}))
    assert "needs an admin key" in (ingest.denial(ADMIN, "a") or "")
    assert "games/b" in (ingest.denial(EVENTS, "b") or "") and "covers games/a" in (ingest.denial(EVENTS, "b") or "")
    assert len(ingest.denial(EVENTS, "x" * 10_000) or "") < 200


@pytest.mark.parametrize(("grant", "kinds", "allowed"), [
    (PUBLISHABLE, ["ad_click", "identify", "game_launch"], True),
    (PUBLISHABLE, ["ad_click", None], True),  # an event without a kind is refused as malformed by the handler
    (PUBLISHABLE, ["purchase"], False),
    (PUBLISHABLE, ["ad_click", "purchase"], False),
    (Grant("k", KeyKind.INGEST, frozenset({"a"})), ["purchase"], True),
    (Grant("k", KeyKind.DEVELOPMENT, frozenset()), ["purchase"], True),
])
def test_what_events_a_grant_may_send(grant: Grant, kinds: list[str | None], allowed: bool) -> None:
    assert (grant.event_kind_denial(kinds) is None) == allowed


def test_a_publishable_key_is_told_why_it_may_not_send_purchases() -> None:
    denial = PUBLISHABLE.event_kind_denial(["purchase"]) or ""
    assert "not purchase" in denial and "ingest key" in denial
    # A secret key's caller is a server: it is pointed at the ingest key, not at the public one.
    assert "needs an ingest key" in (Grant("k", KeyKind.ADMIN, frozenset()).denial(EVENTS | CLIENT, "a") or "")
    assert "a publishable key may not call this method" in (PUBLISHABLE.denial(ADMIN, "a") or "")


@pytest.mark.parametrize(("text", "origin"), [
    ("https://www.mygame.com", "https://www.mygame.com"),
    ("https://www.MyGame.com/", "https://www.mygame.com"),
    (" https://www.mygame.com:443 ", "https://www.mygame.com"),
    ("http://www.mygame.com:443", "http://www.mygame.com:443"),
    ("http://localhost:8000", "http://localhost:8000"),
    ("http://127.0.0.1:80", "http://127.0.0.1"),
    ("http://[::1]:8080", "http://[::1]:8080"),
    ("https://www.mygame.com/landing", None),
    ("https://www.mygame.com?x=1", None),
    ("https://www.mygame.com#top", None),
    ("https://user:pw@www.mygame.com", None),
    ("https://www.mygame.com:99999", None),
    ("ftp://www.mygame.com", None),
    ("www.mygame.com", None),
    ("null", None),
    ("", None),
])
def test_normalise_origin(text: str, origin: str | None) -> None:
    assert normalise_origin(text) == origin
