"""Tests for the event rules that ingest's fast paths must keep exactly: the stored payload fingerprint, click ids."""

import hashlib
from urllib.parse import parse_qs, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from server.core.events import EventKind, NewEvent, derive_click, simple_query
from server.core.types import Network

EVENTS = [
    NewEvent("c-1", EventKind.AD_CLICK, 1_700_000_000_000_000, None, "a-1", None, None, "10.0.0.1", "ua 'quoted' \"x\"",
             Network.TIKTOK, "E.C.P.1", "https://play.example.com/?ttclid=E.C.P.1"),
    NewEvent("i-1", EventKind.IDENTIFY, 1, "u-1", "a-1", "e" * 64, "f" * 64),
    NewEvent("l-1", EventKind.GAME_LAUNCH, 17, "u-1"),
    NewEvent("p-1", EventKind.PURCHASE, 17, "u-1", None, None, None, "::1", None, None, None, None, 4_990_000, "USD",
             "o-1", ("gems_500", "it's")),
    NewEvent("p-2", EventKind.PURCHASE, 17, anonymous_id="é\u2028", network=Network.REDDIT, item_ids=("one",)),
]


def test_fingerprint_is_the_digest_of_the_repr_of_all_fields_in_order() -> None:
    # Fingerprints are stored: a retry after an upgrade must still match the digest taken before it.
    for event in EVENTS:
        assert event.fingerprint() == hashlib.sha256(repr(tuple(getattr(event, name) for name in event._fields))
                                                     .encode()).hexdigest()


def test_fingerprint_of_a_known_event_never_changes() -> None:
    # Computed by the frozen-dataclass implementation this one replaced.
    assert EVENTS[0].fingerprint() == "74ce026d00789b1371ebf9e99917da3e70dae549a9625453a9bfb493a8a6d15b"


@given(st.lists(st.sampled_from(["https://", "play.example.com", "/", "?", "&", "=", "ttclid", "rdt_cid", "E.C.P.1",
                                 "x", ":", ";", "a=b", "==", "%41", "+", "#", "[", "]", " ", "\t", "é", "@", "//"]),
                max_size=14).map("".join))
def test_simple_query_is_what_urllib_parses(url: str) -> None:
    # derive_click reads simple landing URLs without urllib: where simple_query answers, it must answer the same.
    query = simple_query(url)
    if query is not None:
        assert query == parse_qs(urlsplit(url).query)


def test_simple_query_takes_ordinary_landing_urls() -> None:
    url = "https://play.example.com/?utm_source=tiktok&utm_campaign=spring&ttclid=E.C.P.000000000001v2"
    assert simple_query(url) == parse_qs(urlsplit(url).query)
    assert derive_click(None, None, url) == (Network.TIKTOK, "E.C.P.000000000001v2")
