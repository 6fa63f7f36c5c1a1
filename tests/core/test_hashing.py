"""Tests for match-key normalisation and hashing, including every vector in networks.md."""

import hashlib

import pytest

from server.core.hashing import (
    canonical_ip,
    hash_email_reddit,
    hash_email_tiktok,
    hash_external_id,
    hash_ip_address,
    hash_phone,
    looks_like_email,
    normalise_email_reddit,
    normalise_email_tiktok,
    sha256_hex,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_sha256_hex_is_lowercase_hex_of_utf8() -> None:
    assert sha256_hex("é") == hashlib.sha256("é".encode()).hexdigest()
    assert sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # networks.md vector
        ("  Foo@Example.COM ", "321ba197033e81286fedb719d60d4ed5cecaed170733cb4a92013811afc0e3b6"),
        # dots and +tags are kept for TikTok
        ("First.Last+promo@Example.com", sha("first.last+promo@example.com")),
        ("\tuser@example.com\n", sha("user@example.com")),
    ],
)
def test_hash_email_tiktok(raw: str, expected: str) -> None:
    assert hash_email_tiktok(raw) == expected


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Al.ice$+Apple@Example.Com", "alice@example.com"),  # networks.md vector
        ("  bob+one+two@Mail.Example.org ", "bob@mail.example.org"),  # from the FIRST '+'
        ("o'neil_x-y@example.com", "oneilxy@example.com"),
        ("plain@example.com", "plain@example.com"),
        ("dots.in.domain@sub.example.co.uk", "dotsindomain@sub.example.co.uk"),
        ("Ünïcode@example.com", "ncode@example.com"),  # only ASCII letters and digits survive
    ],
)
def test_normalise_email_reddit(raw: str, normalised: str) -> None:
    assert normalise_email_reddit(raw) == normalised
    assert hash_email_reddit(raw) == sha(normalised)


def test_reddit_email_vector_hash() -> None:
    assert (
        hash_email_reddit("Al.ice$+Apple@Example.Com")
        == "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976"
    )


def test_email_rules_differ_between_networks() -> None:
    raw = "Al.ice+x@example.com"
    assert normalise_email_tiktok(raw) == "al.ice+x@example.com"
    assert hash_email_tiktok(raw) != hash_email_reddit(raw)


def test_reddit_email_without_at_is_refused() -> None:
    with pytest.raises(ValueError):
        hash_email_reddit("not-an-email")


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [
        ("player-42", "c3214538d133c9d934db63a435cddcae80ec8b6f073babcc7c3a02a17791be79"),  # networks.md
        ("  player-42\n", "c3214538d133c9d934db63a435cddcae80ec8b6f073babcc7c3a02a17791be79"),  # trimmed
        ("Player-42", sha("Player-42")),  # case kept
    ],
)
def test_hash_external_id(user_id: str, expected: str) -> None:
    assert hash_external_id(user_id) == expected


def test_external_id_keeps_case() -> None:
    assert hash_external_id("Player-42") != hash_external_id("player-42")


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("::1", "::1"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4-mapped: the client was an IPv4 client
        ("fe80::1%eth0", "fe80::1"),
        ("not an ip", None),
        ("203.0.113.256", None),
        ("", None),
        ("01.2.3.4", None),
    ],
)
def test_canonical_ip(raw: str, canonical: str | None) -> None:
    assert canonical_ip(raw) == canonical


@pytest.mark.parametrize(
    "spellings",
    [
        ["2001:db8::1", "2001:DB8:0:0:0:0:0:1", "2001:0db8:0000:0000:0000:0000:0000:0001"],
        ["203.0.113.7", " 203.0.113.7", "::ffff:203.0.113.7"],
    ],
)
def test_hash_ip_address_is_the_same_for_every_spelling(spellings: list[str]) -> None:
    hashes = {hash_ip_address(spelling) for spelling in spellings}
    assert hashes == {sha(canonical_ip(spellings[0]) or "")}


def test_hash_ip_address_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        hash_ip_address("999.1.1.1")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+14155552671", sha("+14155552671")),
        (" +1 (415) 555-2671 ", sha("+14155552671")),
        ("+44 20.7946.0958", sha("+442079460958")),
        ("a" * 64, "a" * 64),  # already hashed: passed through
        (sha("+14155552671"), sha("+14155552671")),
    ],
)
def test_hash_phone(raw: str, expected: str) -> None:
    assert hash_phone(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "4155552671",  # no '+': country code unknown
        "+0155552671",  # country codes never start with 0
        "+1415555267123456",  # longer than 15 digits
        "+1 415 CALL NOW",
        "A" * 64,  # uppercase hex is not the passthrough form
        "",
    ],
)
def test_hash_phone_refuses_non_e164(raw: str) -> None:
    with pytest.raises(ValueError):
        hash_phone(raw)


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        ("foo@example.com", True),
        ("  Foo@Example.COM ", True),
        ("a.b+tag@sub.example.co.uk", True),
        ("foo@example", False),
        ("foo@", False),
        ("@example.com", False),
        ("foo example@example.com", False),
        ("foo@@example.com", False),
        ("foo@bar@example.com", False),
        ("foo@example..com", False),
        ("", False),
        ("x" * 250 + "@example.com", False),
    ],
)
def test_looks_like_email(raw: str, ok: bool) -> None:
    assert looks_like_email(raw) is ok


@pytest.mark.parametrize("ip", [
    "1.2.3.4", "0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3.04", "256.1.1.1", "1.2.3", "1.2.3.4.5", "1..3.4",
    "\u0661.2.3.4", "1.2.3.+4", "1.2.3.-4", " 1.2.3.4", "1.2.3.4\n", "1_0.2.3.4", "0000.1.1.1", "::ffff:1.2.3.4", "",
])
def test_canonical_ip_agrees_with_ipaddress_for_dotted_quads(ip: str) -> None:
    # canonical_ip answers plain dotted quads without ipaddress; the answer must be the one ipaddress gives.
    import ipaddress

    try:
        expected: str | None = str(ipaddress.ip_address(ip.strip()))
        if isinstance(ipaddress.ip_address(ip.strip()), ipaddress.IPv6Address):
            expected = canonical_ip(ip)  # the IPv6 rules are tested above
    except ValueError:
        expected = None
    assert canonical_ip(ip) == expected
