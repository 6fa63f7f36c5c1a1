"""Property: the fast translation of a valid event gives exactly what the full validation gives, and never accepts an
event the full validation refuses."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postbacks.v1 import event_pb2, network_pb2
from server.api import translate
from server.errors import Violations

NOW_US = int(time.time() * 1e6)

texts = st.one_of(
    st.sampled_from(["", "u-1", " a-2 ", "x" * 128, "x" * 129, "a/b", "tab\tin", "nul\x00", "del\x7f", "é\u2028",
                     "\u200b", "9.99", "usd", "USD", "XXX", "player@example.com", " P+tag@Example.com ", "bad@",
                     "10.0.0.1", "010.0.0.1", "::ffff:10.0.0.1", "fe80::1%eth0", "1.2.3",
                     "https://x.example/?ttclid=E.1", "https://x.example/?rdt_cid=R.1&ttclid=", "https://[x/?ttclid=1",
                     "https://x.example/?ttclid=" + "a" * 512, "https://x.example/?ttclid=" + "a" * 513,
                     "https://x.example/?rdt_cid=%00", "https://x.example/?rdt_cid=a%20b%0A"]),
    st.text(max_size=12),
)


@st.composite
def events(draw):  # type: ignore[no-untyped-def]
    # Mostly well-formed fields, so that both paths accept many of the events and their results are compared.
    clean = draw(st.booleans())

    def field(*usual: str):  # type: ignore[no-untyped-def]
        return draw(st.sampled_from(usual) if clean else st.one_of(st.sampled_from(usual), texts))

    event = event_pb2.Event(event_id=field("e-1", " e-2 "), user_id=field("u-1", ""), anonymous_id=field("a-1", ""),
                            email=field("", "player@example.com"), ip_address=field("", "10.0.0.1", "::1"),
                            user_agent=field("", "Mozilla/5.0"))
    if clean or draw(st.booleans()):
        event.event_time.FromMicroseconds(NOW_US - 10**9 if clean else draw(st.sampled_from(
            [0, -1, 1, NOW_US - 10**9, NOW_US + 10**9])))
        if not clean and draw(st.booleans()):  # nanos outside the second, which FromMicroseconds never makes
            event.event_time.seconds -= 1
            event.event_time.nanos = draw(st.sampled_from([1_000_000_000, 1_999_999_999, -1, 2**31 - 1]))
    kind = draw(st.sampled_from([None, "ad_click", "identify", "game_launch", "purchase"]))
    if kind == "ad_click":
        event.ad_click.CopyFrom(event_pb2.AdClick(network=draw(st.sampled_from([0, 1, 2, 99])),
                                                  click_id=field("", "E.C.P.1"),
                                                  landing_url=field("", "https://x.example/?ttclid=E.1")))
    elif kind == "identify":
        event.identify.SetInParent()
    elif kind == "game_launch":
        event.game_launch.SetInParent()
    elif kind == "purchase":
        purchase = event_pb2.Purchase(currency=field("USD", "eur", ""), order_id=field("", "o-1"),
                                      item_ids=draw(st.lists(st.one_of(st.just("gems"), texts), max_size=3)))
        amount = draw(st.sampled_from([None, "value", "value_micros"]))
        if amount == "value":
            purchase.value = draw(st.one_of(texts, st.sampled_from(["4.99", "-1", "1e3", "0.0000001", "NaN"])))
        elif amount == "value_micros":
            purchase.value_micros = draw(st.sampled_from([0, 5, -5]))
        event.purchase.CopyFrom(purchase)
    return event


@settings(max_examples=3000, deadline=None)
@given(event=events())
def test_fast_path_agrees_with_full_validation(event: event_pb2.Event) -> None:
    violations = Violations()
    full = translate.event_from_proto(event, "events[0]", NOW_US, violations)
    fast = translate.valid_event_from_proto(event, NOW_US)
    if violations.items:
        assert fast is None
    else:
        assert full is not None
        assert fast is None or fast == full


def test_fast_path_takes_ordinary_events() -> None:
    event = event_pb2.Event(event_id="p-1", user_id="u-1", ip_address="10.0.0.1", user_agent="ua",
                            purchase=event_pb2.Purchase(value="4.99", currency="usd", order_id="o-1", item_ids=["g"]))
    event.event_time.FromMicroseconds(NOW_US - 1_000_000)
    click = event_pb2.Event(event_id="c-1", anonymous_id="a-1", ad_click=event_pb2.AdClick(
        network=network_pb2.NETWORK_REDDIT, landing_url="https://x.example/?rdt_cid=R.1"))
    click.event_time.FromMicroseconds(NOW_US - 1_000_000)
    for msg in (event, click):
        fast = translate.valid_event_from_proto(msg, NOW_US)
        assert fast is not None and fast == translate.event_from_proto(msg, "event", NOW_US, Violations())


@pytest.mark.parametrize(("micros", "text"), [(10_000_000, "10"), (100_000_000, "100"), (12_000_000, "12"),
                                              (9_990_000, "9.99"), (1, "0.000001"), (0, "0")])
def test_a_conversion_value_is_its_shortest_exact_decimal(micros: int, text: str) -> None:
    # Whole tens once came back as "10.000000" while other whole amounts came back bare.
    assert translate.format_value(micros) == text
