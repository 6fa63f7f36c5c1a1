"""Checking network credentials before they are saved: the verdict as data, and the port the network client fills."""

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from server.core.postback import NetworkCredentials
from server.core.types import EventType, Network
from server.errors import FailedPrecondition, Unavailable

NETWORK_LABELS = {Network.TIKTOK: "TikTok", Network.REDDIT: "Reddit"}


class CheckResult(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    UNREACHABLE = "unreachable"
    THROTTLED = "throttled"


@dataclass(frozen=True, slots=True)
class CredentialCheck:
    result: CheckResult
    http_status: int | None
    network_code: str | None
    message: str
    request_id: str | None
    retry_after_s: float | None = None  # THROTTLED: the wait the network asked for, when it said


class CredentialChecker(Protocol):
    async def check(self, network: Network, credentials: NetworkCredentials, event_type: EventType,
                    test_code: str | None) -> CredentialCheck:
        """Sends one synthetic event of `event_type` (to the test tooling when `test_code` is given)."""
        ...


def require_accepted(network: Network, check: CredentialCheck) -> None:
    """Turns a verdict that forbids saving into the error the caller sees; nothing has been saved."""
    label = NETWORK_LABELS[network]
    detail = ", ".join(filter(None, [
        f"HTTP {check.http_status}" if check.http_status else None,
        f"code {check.network_code}" if check.network_code else None,
        check.message or None,
    ]))
    metadata = {k: v for k, v in {"network_code": check.network_code or "", "http_status": str(check.http_status or ""),
                                  "network_request_id": check.request_id or ""}.items() if v}
    if check.result == CheckResult.REJECTED:
        raise FailedPrecondition(f"{label} rejected the credentials ({detail}); nothing was saved",
                                 reason="CREDENTIALS_REJECTED", metadata=metadata)
    if check.result == CheckResult.THROTTLED:
        wait = " later"
        if check.retry_after_s is not None:
            metadata["retry_after_s"] = str(math.ceil(check.retry_after_s))
            wait = f" in {metadata['retry_after_s']} s"
        raise Unavailable(f"could not validate the credentials: {label} is limiting this account's requests "
                          f"({detail}); nothing was saved, try again{wait}", reason="NETWORK_THROTTLED",
                          metadata=metadata)
    if check.result == CheckResult.UNREACHABLE:
        raise Unavailable(f"could not validate the credentials: {label} is unreachable ({detail}); nothing was saved, "
                          "try again", reason="NETWORK_UNREACHABLE", metadata=metadata)
