"""Incoming events as the domain sees them, and the pure rules for reading them: click derivation, money, currencies."""

import hashlib
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

from server.core.types import EventType, Network

MAX_FUTURE_US = 5 * 60 * 1_000_000
MICROS_PER_UNIT = 1_000_000
# The largest value that fits int64 micros: a few trillion currency units.
MAX_VALUE_MICROS = 2**63 - 1

CLICK_ID_PARAMS: dict[Network, str] = {Network.TIKTOK: "ttclid", Network.REDDIT: "rdt_cid"}


class EventKind(StrEnum):
    AD_CLICK = "ad_click"
    IDENTIFY = "identify"
    GAME_LAUNCH = "game_launch"
    PURCHASE = "purchase"

    @property
    def conversion_type(self) -> EventType | None:
        return _CONVERSION_TYPES.get(self)


_CONVERSION_TYPES = {EventKind.GAME_LAUNCH: EventType.GAME_LAUNCH, EventKind.PURCHASE: EventType.PURCHASE}
# Enum reprs are computed in Python on every call; the fingerprint needs them for every event.
_ENUM_REPRS: dict[object, str] = {member: repr(member) for member in (*EventKind, *Network)}


class NewEvent(NamedTuple):
    """A validated, normalised event: the clear email is already replaced by its two hashes. A named tuple, not a
    frozen dataclass: as immutable, and several times cheaper to build, which ingest does for every event."""

    event_id: str
    kind: EventKind
    event_time_us: int
    user_id: str | None = None
    anonymous_id: str | None = None
    email_sha256: str | None = None
    email_sha256_reddit: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    network: Network | None = None
    click_id: str | None = None
    landing_url: str | None = None
    value_micros: int | None = None
    currency: str | None = None
    order_id: str | None = None
    item_ids: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        """A digest of the payload, to tell a retry (same payload) from a reused event id (different payload).

        The digest is stored, so its text must never change: it is the repr of the tuple of all fields in order,
        built here without repr() of the enum members (slow) but to exactly the same text."""
        network = self.network
        text = ", ".join((
            repr(self.event_id), _ENUM_REPRS[self.kind], repr(self.event_time_us), repr(self.user_id),
            repr(self.anonymous_id), repr(self.email_sha256), repr(self.email_sha256_reddit), repr(self.ip_address),
            repr(self.user_agent), "None" if network is None else _ENUM_REPRS[network], repr(self.click_id),
            repr(self.landing_url), repr(self.value_micros), repr(self.currency), repr(self.order_id),
            repr(self.item_ids),
        ))
        return hashlib.sha256(f"({text})".encode()).hexdigest()


def derive_click(network: Network | None, click_id: str | None, landing_url: str | None) -> tuple[Network | None, str | None]:
    """Fills in the network and click id from the landing URL's query when the pixel did not name them.

    A URL carrying one network's click id parameter names that network; an explicit network wins, and then
    only its own parameter is read, so a TikTok click never takes a stray `rdt_cid` as its click id.
    """
    if not landing_url or (network and click_id):
        return network, click_id
    query = simple_query(landing_url)
    if query is None:
        try:
            query = parse_qs(urlsplit(landing_url).query)
        except ValueError:
            return network, click_id
    candidates = [network] if network else list(CLICK_ID_PARAMS)
    for candidate in candidates:
        values = [v.strip() for v in query.get(CLICK_ID_PARAMS[candidate], []) if v.strip()]
        if values:
            return candidate, click_id or values[0]
    return network, click_id


_NOT_SIMPLE = frozenset(" %+#[]")


def simple_query(url: str) -> dict[str, list[str]] | None:
    """parse_qs(urlsplit(url).query) for a URL where nothing needs decoding or normalising (printable ASCII without
    spaces, escapes, '+', a fragment or brackets), else None. Nearly every landing URL is one, and urllib's general
    parse costs more than the rest of a click's ingest: here the query is all after the first '?', and each
    'name=value' pair with a value counts."""
    if not (url.isascii() and url.isprintable()) or not _NOT_SIMPLE.isdisjoint(url):
        return None
    query: dict[str, list[str]] = {}
    for pair in url.partition("?")[2].split("&"):
        name, equals, value = pair.partition("=")
        if equals and value:
            query.setdefault(name, []).append(value)
    return query


def parse_decimal_value(text: str) -> int:
    """A non-negative decimal string in currency units to integer micros; ValueError with a reason otherwise."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError("must be a decimal number such as 9.99") from None
    if not value.is_finite():
        raise ValueError("must be a finite decimal number")
    if value < 0:
        raise ValueError("must not be negative")
    micros = value * MICROS_PER_UNIT
    if micros != micros.to_integral_value():
        raise ValueError("has more than 6 decimal places")
    if micros > MAX_VALUE_MICROS:
        raise ValueError("is too large")
    return int(micros)


# ISO 4217 active codes (alphabetic), including funds codes networks accept; XXX/XTS (no/test currency) excluded.
ISO_4217_CODES = frozenset("""
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF
CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD
GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP
LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN
PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS
TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XCD XCG XDR XOF XPD
XPF XPT XSU XUA YER ZAR ZMW ZWG ZWL
""".split())
