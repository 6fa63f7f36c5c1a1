"""Service settings: each one a command-line flag and a POSTBACKS_* environment variable, with a sensible default."""

import argparse
import dataclasses
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any

ROLES = ("all", "api", "dispatcher")


def _setting(default: Any, help_text: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass(frozen=True)
class Settings:
    listen: str = _setting("127.0.0.1:50051", "address the gRPC server listens on (host:port; port 0 picks a free one)")
    http_listen: str = _setting("127.0.0.1:8080", "address the HTTP API (Connect protocol, JSON or binary) and the web "
                                                  "pixel listen on (host:port; port 0 picks a free one; off when empty)")
    data_dir: str = _setting("data", "directory for the embedded SQLite database and the generated secret key")
    database_url: str = _setting("", "SQLAlchemy URL; default sqlite+aiosqlite:///<data_dir>/postbacks.db. "
                                     "PostgreSQL: postgresql+asyncpg://user@host/db")
    role: str = _setting("all", "all: API and dispatcher in one process; api: no dispatcher; dispatcher: no API",
                         choices=ROLES)
    dispatcher_process: str = _setting("auto", "--role all: run the dispatcher in a child process of its own (on), in "
                                               "this one (off), or in a child when more than one CPU is available "
                                               "(auto)", choices=("auto", "on", "off"))
    tiktok_base_url: str = _setting("https://business-api.tiktok.com", "TikTok Business API base URL")
    reddit_base_url: str = _setting("https://ads-api.reddit.com", "Reddit Ads API base URL")
    secret_keys: str = _setting("", "comma-separated base64 AES-256 keys for credentials at rest, newest first; "
                                    "default: <data_dir>/secret.key, created on first run")
    shutdown_grace_s: float = _setting(10.0, "seconds in-flight calls get to finish on SIGTERM/SIGINT")
    sqlite_synchronous: str = _setting("FULL", "SQLite synchronous pragma: FULL survives power loss, NORMAL only "
                                               "process crashes", choices=("FULL", "NORMAL"))
    attribution_grace_s: float = _setting(3600.0, "how long after a conversion arrives a late click or identify "
                                                  "may still attribute it")
    # Dispatcher.
    dispatch_batch_size: int = _setting(1000, "postbacks per network request (1 to 1000)")
    dispatch_concurrency: int = _setting(16, "network requests in flight at once")
    dispatch_batches_per_config: int = _setting(4, "network requests in flight at once for one config")
    dispatch_lease_s: float = _setting(60.0, "how long a claimed postback is reserved for one dispatcher")
    dispatch_poll_s: float = _setting(1.0, "longest sleep between claims when nothing is due")
    dispatch_probe_s: float = _setting(0.05, "how often an idle dispatcher looks (one cheap read) for postbacks "
                                             "another process committed; on SQLite it also notices such a commit "
                                             "within 5 ms")
    http_connect_timeout_s: float = _setting(5.0, "connect timeout for requests to the networks")
    http_total_timeout_s: float = _setting(20.0, "total timeout for one request to a network")
    rate_limit_per_config: float = _setting(50.0, "network requests per second per postback config")
    retry_base_delay_s: float = _setting(30.0, "first retry delay (then doubled, jittered); during an outage, also "
                                               "the delay before a config's first probe")
    retry_max_delay_s: float = _setting(3600.0, "longest delay between two attempts, or two probes of an outage")
    retry_tiktok_horizon_s: float = _setting(24 * 3600.0, "TikTok: stop retrying this long after the first "
                                                          "attempt (TikTok deduplicates for 48 h)")
    retry_reddit_margin_s: float = _setting(3600.0, "Reddit: stop retrying this long before the event is 7 days "
                                                    "old (Reddit refuses older events)")
    credential_probe_interval_s: float = _setting(600.0, "while a config's credentials are refused, its postbacks "
                                                         "are held and one probe request goes this long after the "
                                                         "refusal, then at doubling intervals")
    credential_probe_max_interval_s: float = _setting(3600.0, "the longest interval between two probes of refused "
                                                              "credentials")
    # Observability and retention.
    metrics_listen: str = _setting("", "host:port for the Prometheus /metrics endpoint; off when empty")
    log_retention_days: int = _setting(30, "days delivery-log entries are kept")
    log_purge_interval_s: float = _setting(600.0, "seconds between purges of expired delivery-log entries")
    pg_max_identity_locks: int = _setting(4000, "PostgreSQL: an ingest transaction that would lock more of its "
                                             "players' identities than this locks its games whole instead")
    pg_statistics_interval_s: float = _setting(0.5, "PostgreSQL: how often to look for hot tables grown by a fifth "
                                                    "since the planner's statistics of them, and ANALYZE those")
    log_stream_heartbeat_s: float = _setting(15.0, "an idle StreamDeliveryLogs call sends a heartbeat after this "
                                                   "many seconds")
    log_stream_poll_s: float = _setting(1.0, "how often log streams look for entries written by other processes")
    log_stream_settle_s: float = _setting(5.0, "PostgreSQL: how long log streams wait for a missing delivery-log "
                                               "id to commit before skipping it")
    log_level: str = _setting("INFO", "log level")
    # Transport security.
    tls_cert_file: str = _setting("", "PEM certificate chain; serves TLS when set with --tls-key-file")
    tls_key_file: str = _setting("", "PEM private key for --tls-cert-file")
    # Access control and abuse limits.
    dev_key_file: str = _setting("", "development mode: keep a full-access development key in this file (created "
                                     "once, owner-only) and honour development keys; never set in production")
    api_key_cache_s: float = _setting(2.0, "seconds an API key lookup is cached; a revoked key stops working "
                                           "within this time")
    max_receive_message_bytes: int = _setting(4 * 1024 * 1024, "largest request message accepted, in bytes")
    max_streams_per_key: int = _setting(8, "open StreamDeliveryLogs streams allowed per API key at once, per server")
    trusted_proxy: str = _setting("", "comma-separated CIDRs of the proxies in front of the HTTP API whose "
                                      "X-Forwarded-For is believed (publishable keys: the client address)")
    publishable_rate_per_ip: float = _setting(20.0, "publishable keys: requests per second per client address, per "
                                                    "server (bursts of twice as many)")
    publishable_rate_per_key: float = _setting(1000.0, "publishable keys: requests per second per key, per server "
                                                       "(bursts of twice as many)")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{pathlib.Path(self.data_dir).resolve() / 'postbacks.db'}"

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


def env_name(field_name: str) -> str:
    return f"POSTBACKS_{field_name.upper()}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds one --flag per setting; each flag's default comes from its environment variable, then the code."""
    for f in dataclasses.fields(Settings):
        kind = f.type if isinstance(f.type, type) else {"str": str, "int": int, "float": float}[f.type]
        default = os.environ.get(env_name(f.name), f.default)
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=kind,
            default=kind(default),
            choices=f.metadata.get("choices"),
            help=f"{f.metadata['help']} (env {env_name(f.name)}; default %(default)s)",
        )


def from_namespace(namespace: argparse.Namespace) -> Settings:
    return Settings(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(Settings)})

