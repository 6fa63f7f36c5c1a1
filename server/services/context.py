"""What every use case needs from the process: settings, the database, the secret box, the clock, hooks."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from server.metrics import Metrics
from server.secrets import SecretBox
from server.services.credentials import CredentialChecker
from server.settings import Settings
from server.store.db import Database


def wall_clock_us() -> int:
    return time.time_ns() // 1000


@dataclass
class ServiceContext:
    settings: Settings
    db: Database
    secrets: SecretBox
    credential_checker: CredentialChecker
    clock: Callable[[], int] = wall_clock_us
    # Called after a transaction that added due postbacks commits; the in-process dispatcher listens.
    outbox_listeners: list[Callable[[], None]] = field(default_factory=list)
    # Called after delivery-log rows commit; log followers (StreamDeliveryLogs) listen.
    delivery_log_listeners: list[Callable[[], None]] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)

    def outbox_changed(self) -> None:
        for listener in self.outbox_listeners:
            listener()

    def delivery_logs_written(self) -> None:
        for listener in self.delivery_log_listeners:
            listener()
