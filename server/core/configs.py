"""Rules for postback configs: credential format checks, and health derived from delivery outcomes."""

import re

from server.core import limits
from server.core.types import ConfigHealth, Network

_REDDIT_PIXEL = re.compile(rf"a2_[A-Za-z0-9]{{1,{limits.PIXEL_ID - 3}}}")
_TIKTOK_PIXEL = re.compile(rf"[A-Za-z0-9]{{1,{limits.PIXEL_ID}}}")


def access_token_problem(token: str) -> str | None:
    """Why a (trimmed) token is obviously not a token, or None. The network decides the rest."""
    if not token:
        return "is required"
    if len(token) > limits.ACCESS_TOKEN:
        return f"must be at most {limits.ACCESS_TOKEN} characters"
    if any(c.isspace() or not c.isprintable() for c in token):
        return "must not contain spaces or control characters (copy the token again)"
    return None


def pixel_id_problem(network: Network, pixel_id: str) -> str | None:
    if not pixel_id:
        return "is required"
    if network == Network.REDDIT and not _REDDIT_PIXEL.fullmatch(pixel_id):
        return f"must be a Reddit pixel ID: a2_ followed by letters and digits, at most {limits.PIXEL_ID} characters"
    if network == Network.TIKTOK and not _TIKTOK_PIXEL.fullmatch(pixel_id):
        return f"must be a TikTok pixel code: up to {limits.PIXEL_ID} letters and digits"
    return None


def health(last_success_us: int | None, last_credential_failure_us: int | None,
           credentials_update_us: int) -> ConfigHealth:
    """Credential failures show until a delivery succeeds after them or the credentials are replaced after them."""
    if last_credential_failure_us is not None and last_credential_failure_us > max(
        last_success_us or 0, credentials_update_us
    ):
        return ConfigHealth.CREDENTIAL_FAILURES
    if last_success_us is None:
        return ConfigHealth.NO_RECENT_ACTIVITY
    return ConfigHealth.HEALTHY
