"""Normalisation and SHA-256 hashing of match keys (email, user id, IP, phone) as each ad network expects."""

import hashlib
import ipaddress
import re

from server.core import limits

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_NOT_ASCII_ALNUM = re.compile(r"[^a-z0-9]")
# Separators people type inside phone numbers; anything else left over makes the number invalid.
_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
# E.164: a country code that never starts with 0, at most 15 digits in all.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SIMPLE_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


def sha256_hex(text: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 encoding of text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def looks_like_email(raw: str) -> bool:
    """A deliberately simple sanity check: one '@', a non-empty local part, a dotted domain, no spaces."""
    candidate = raw.strip()
    return len(candidate) <= limits.EMAIL and _SIMPLE_EMAIL.fullmatch(candidate) is not None


def normalise_email_tiktok(raw: str) -> str:
    return raw.strip().lower()


def hash_email_tiktok(raw: str) -> str:
    """TikTok: trim, lowercase, SHA-256. Dots and +tags are kept."""
    return sha256_hex(normalise_email_tiktok(raw))


def normalise_email_reddit(raw: str) -> str:
    """Reddit: trim, lowercase, drop '+tag' from the local part, keep only ASCII letters and digits there.

    Raises ValueError when there is no '@' (ingest validates with looks_like_email first).
    """
    local, at, domain = raw.strip().lower().rpartition("@")
    if not at:
        raise ValueError("not an email address: no '@'")
    local = local.split("+", 1)[0]
    return f"{_NOT_ASCII_ALNUM.sub('', local)}@{domain}"


def hash_email_reddit(raw: str) -> str:
    return sha256_hex(normalise_email_reddit(raw))


def hash_external_id(user_id: str) -> str:
    """SHA-256 of the trimmed user id; case is kept because user ids are case-sensitive."""
    return sha256_hex(user_id.strip())


def canonical_ip(ip: str) -> str | None:
    """IPv4 dotted decimal or IPv6 compressed lowercase; None when ip is not an address.

    An IPv4-mapped IPv6 address (as dual-stack servers report IPv4 clients) becomes plain IPv4, and an
    IPv6 zone id is dropped: neither is part of the address the network itself saw.
    """
    if _is_canonical_ipv4(ip):  # most addresses arrive like this, and ipaddress takes microseconds to say so
        return ip
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if address.scope_id is not None:
            return str(ipaddress.IPv6Address(str(address).split("%", 1)[0]))
    return str(address)


def _is_canonical_ipv4(ip: str) -> bool:
    """Dotted decimal exactly as ipaddress would print it: four ASCII numbers up to 255, no leading zeros."""
    parts = ip.split(".")
    if len(parts) != 4:
        return False
    for part in parts:
        if not (part.isascii() and part.isdigit()) or len(part) > 3 or (len(part) > 1 and part[0] == "0") \
                or int(part) > 255:
            return False
    return True


def hash_ip_address(ip: str) -> str:
    """SHA-256 of the canonical text form of ip (Reddit). Raises ValueError when ip is not an address."""
    canonical = canonical_ip(ip)
    if canonical is None:
        raise ValueError("not an IP address")
    return sha256_hex(canonical)


def hash_phone(raw: str) -> str:
    """SHA-256 of the E.164 form ('+' then digits); a value already 64 lowercase hex is passed through.

    Raises ValueError when the number is not E.164 (without a '+' the country code is unknown).
    """
    candidate = raw.strip()
    if _SHA256_HEX.fullmatch(candidate):
        return candidate
    e164 = _PHONE_SEPARATORS.sub("", candidate)
    if not _E164.fullmatch(e164):
        raise ValueError("not an E.164 phone number")
    return sha256_hex(e164)
