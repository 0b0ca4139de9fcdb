"""Configuration: one pydantic-settings class, from `SCANNER_*` env vars and an optional TOML file.

Precedence (highest first): explicit keyword arguments (CLI options), environment variables
`SCANNER_<FIELD>`, the TOML file named by `SCANNER_CONFIG` (or `--config`), defaults.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from scanner.instance import DEFAULT_DATA_DIR, DEFAULT_INSTANCE, INSTANCE_PATTERN, InstancePaths

MIN_API_KEY_LEN = 16


class Settings(BaseSettings):
    """Everything an instance needs to start; one instance per host and symbol range."""

    model_config = SettingsConfigDict(env_prefix="SCANNER_", extra="forbid", validate_default=True)

    instance: str = Field(DEFAULT_INSTANCE, pattern=INSTANCE_PATTERN,
                          description="Instance name: names the shared-memory segments and the pidfile.")
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="Pidfile, logs, checkpoints, rule store, spool.")

    # universe and feed
    symbols: int = Field(5000, ge=1, le=100_000, description="Synthetic universe size.")
    symbols_file: Path | None = Field(None, description="One symbol per line; replaces the synthetic names.")
    range_start: int = Field(0, ge=0, description="First row of the universe this host scans.")
    range_end: int | None = Field(None, description="End (exclusive) of this host's range; None = all.")
    feed: Literal["synthetic", "replay", "none", "kafka", "alpaca", "polygon"] = "synthetic"
    feed_rate: float = Field(5_000.0, gt=0, description="Synthetic ticks per second (session average).")
    feed_seed: int = 7
    feed_speed: float = Field(1.0, gt=0, description="Synthetic clock speed (1 = real time).")
    feed_preopen_s: float = Field(
        0.0, ge=0, le=5.5 * 3600, description="Synthetic feed: start this long before the open of the latest "
        "weekday (0 = now in the session, else at the open).")
    replay_files: list[str] = Field(default_factory=list, description="Recorded trade files (feed 'replay').")
    replay_max: bool = Field(False, description="Replay as fast as possible.")
    replay_speed: float = Field(1.0, gt=0, description="Replay pace: event seconds per wall second (1 = real time).")
    replay_format: Literal["auto", "lean", "dbn", "csv", "flat"] = Field(
        "auto", description="Format of the replay files; 'auto' decides per file from its name and header.")
    replay_symbols: list[str] = Field(default_factory=list,
                                      description="Replay only these symbols (empty: every symbol in the files).")
    replay_daily: Path | None = Field(None, description="Lean daily/ folder for previous close and average "
                                      "volume; default: the sibling daily/ of Lean tick files.")
    replay_batch: int = Field(65_536, ge=1, le=1 << 22, description="Replay: ticks per decoded batch (any "
                              "size gives the same bars and alerts).")
    replay_csv_layout: dict[str, str] = Field(
        default_factory=dict, description="CSV trades: column names and ts unit overriding the defaults "
        "(keys: symbol, ts, price, size, conditions, correction, ts_unit).")

    # live vendor feeds (feed "alpaca" | "polygon"; procs/ingest_live.py, docs/operations.md)
    feed_url: str | None = Field(None, description="Vendor WebSocket endpoint override (None: the vendor's).")
    feed_rest_url: str | None = Field(None, description="Vendor REST base URL override (None: the vendor's).")
    alpaca_feed: Literal["iex", "sip"] = Field("iex", description="Alpaca data feed: free IEX or paid SIP.")
    alpaca_key_id: SecretStr | None = Field(None, description="Alpaca API key id (SCANNER_ALPACA_KEY_ID).")
    alpaca_secret_key: SecretStr | None = Field(None, description="Alpaca secret (SCANNER_ALPACA_SECRET_KEY).")
    polygon_api_key: SecretStr | None = Field(None, description="Polygon/Massive key (SCANNER_POLYGON_API_KEY).")
    feed_dead_after_s: float = Field(
        15.0, gt=0, description="No message for this long while the market is open: the connection is dead.")
    feed_backoff_min_s: float = Field(0.5, gt=0, description="First reconnect delay (doubles, jittered).")
    feed_backoff_max_s: float = Field(30.0, gt=0, description="Longest reconnect delay.")
    feed_exchanges: list[str] = Field(
        default_factory=list, description="Vendor universe: keep these listing exchanges (empty: all US).")
    feed_max_symbols: int = Field(0, ge=0, description="Vendor universe: keep the first N symbols (0: all).")
    feed_gap_repair: bool = Field(True, description="After a reconnect, fetch the missed minutes from REST.")

    # Kafka (optional): the feed bridge produces ticks, hosts with feed "kafka" consume their range
    kafka_bootstrap: str | None = Field(None, description="Kafka bootstrap servers (host:port,...); None = off.")
    kafka_ticks_topic: str = Field("ticks", min_length=1, max_length=200, description="Topic of the bridge's ticks.")
    kafka_partitions: int = Field(16, ge=1, le=4096, description="Partitions of the ticks topic (all hosts agree).")
    kafka_alerts_topic: str | None = Field(None, max_length=200, description="Also produce alerts here (None = off).")
    kafka_group: str | None = Field(
        None, min_length=1, max_length=200,
        description="Join this consumer group instead of a fixed range: the table holds the whole universe, "
                    "the group's rebalance assigns partitions (None = fixed ranges).")
    kafka_session_timeout_ms: int = Field(
        10_000, ge=1000, le=300_000, description="Group mode: how long a dead host keeps its partitions.")

    # processes
    scan_workers: int = Field(0, ge=0, le=32, description="Scanner processes; 0 = number of cores.")
    scan_interval_ms: int = Field(1000, ge=50, le=60_000, description="Scan cadence.")
    cpu_map: dict[str, int] = Field(default_factory=dict,
                                    description="Process name -> core; unnamed ones round-robin.")
    pin: bool = Field(True, description="Pin processes to cores with sched_setaffinity.")
    heartbeat_timeout_s: float = Field(5.0, gt=0, description="A heartbeat older than this is a stall.")
    boot_timeout_s: float = Field(30.0, gt=0, description="Time a child may take to send its first heartbeat.")
    fork_server: bool = Field(True, description="Start children as forks of a process that has imported them "
                              "(procs.zygote), not as fresh interpreters: ~1 s of CPU less per start.")
    crash_loop_restarts: int = Field(5, ge=2, description="Crash-loop breaker: this many restarts of one child ...")
    crash_loop_window_s: float = Field(60.0, gt=0, description="... within this many seconds ...")
    crash_loop_hold_s: float = Field(60.0, gt=0, description="... hold it back this long before the next start.")
    checkpoint_interval_s: float = Field(60.0, gt=0)
    stop_timeout_s: float = Field(10.0, gt=0, description="TERM -> KILL deadline on stop.")

    # shared memory
    tick_ring_capacity: int = Field(1 << 20, description="Tick ring records (power of two).")
    bar_ring_capacity: int = Field(1 << 17)
    alert_ring_capacity: int = Field(1 << 16)
    bar_history: int = Field(400, ge=1, le=5000, description="Closed bars kept per symbol (K).")
    block_rows: int = Field(256, description="Rows per seqlock block (power of two).")
    bar_grace_ms: int = Field(2000, ge=0, description="Event-time grace before a minute closes.")

    # gateway
    serve: bool = Field(True, description="Run the publisher and the gateways (alerts to Redis, WebSocket, REST, "
                        "dashboard, notifier). Off for a replay that only computes (`scanner backtest`, "
                        "`scanner replay --no-serve`): its alerts are read from the scanners' rings.")
    http_host: str = "127.0.0.1"
    http_port: int = Field(8700, ge=0, le=65535)
    gateway_workers: int = Field(0, ge=0, le=8, description="Gateway processes sharing the port (SO_REUSEPORT); "
                                 "0 = one per two cores.")
    api_keys: dict[SecretStr, Literal["read", "write"]] = Field(
        default_factory=dict,
        description=f"Bearer API keys -> scope; each at least {MIN_API_KEY_LEN} characters, no spaces (secrets: "
        "masked in dumps and reprs). Empty: no auth (only allowed on a loopback address).")
    rate_limit_per_s: float = Field(50.0, ge=0, description="REST requests per second per API key (per client "
                                    "address without a valid key), per gateway process; 0 = no limit.")
    rate_limit_burst: int = Field(100, ge=1, description="REST requests a key may send at once (bucket size).")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS.")
    max_request_bytes: int = Field(256 * 1024, ge=1024, description="Largest request body accepted.")
    ws_max_clients: int = Field(5000, ge=1, description="WebSocket connections per gateway process.")
    ws_client_buffer_bytes: int = Field(
        1 << 20, ge=16 * 1024, description="Unsent bytes held per WebSocket client; past it, frames are dropped.")
    ws_max_message_bytes: int = Field(64 * 1024, ge=1024, description="Largest message a WebSocket client may send.")
    ws_max_subscription: int = Field(1000, ge=1, description="Rules + symbols + tags in one subscription.")
    ws_rate_per_s: float = Field(20.0, gt=0, description="WebSocket messages per second per API key (sustained).")
    ws_rate_burst: float = Field(40.0, ge=1, description="WebSocket messages per API key at once.")

    # external sinks (off unless configured)
    redis_url: SecretStr | None = Field(None, description="redis://[user:password@]host:port/db (a secret: "
                                        "masked in dumps, redacted in logs).")
    alerts_stream_maxlen: int = Field(1_000_000, ge=1000, description="Approximate MAXLEN of the alerts stream.")
    redis_buffer_limit: int = Field(100_000, ge=100,
                                    description="Alerts held while Redis is down; older ones are dropped and counted.")
    registry_ttl_s: float = Field(10.0, ge=1.0, le=300.0, description="With redis_url: a host whose registry "
                                  "record is older than this is missing from the cluster.")
    cluster_top_metrics: list[str] = Field(
        default_factory=lambda: ["change_pct", "change_from_open_pct", "gap_pct", "relative_volume", "day_volume",
                                 "rsi_14", "range_pct"],
        max_length=64, description="With redis_url: metrics whose top lists this host publishes for the cluster.")
    cluster_top_n: int = Field(100, ge=1, le=1000, description="Rows per published top list (per metric and order).")
    public_url: str | None = Field(None, description="URL of this host's gateway for the other hosts of a cluster; "
                                   "None = http://<http_host>:<http_port>.")
    database_url: SecretStr | None = Field(None, description="PostgreSQL URL (a secret, like redis_url).")
    rules_store: Literal["auto", "file", "postgres"] = Field(
        "auto", description="Where rules live: auto = PostgreSQL when database_url is set, else rules.json.")

    # storage (procs/storage/; see docs/storage.md)
    clickhouse_url: SecretStr | None = Field(
        None, description="ClickHouse: http(s)://user:pass@host:8123/db, or chdb:///dir (embedded engine); a secret.")
    s3_bucket: str | None = Field(None, description="Cold archive bucket (Parquet per day); None = no archive.")
    s3_prefix: str = Field("scanner/", description="Key prefix of the archive inside the bucket.")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto); None = AWS.")
    s3_region: str = "us-east-1"
    spool_dir: Path | None = Field(None, description="Local spool of bars not yet committed; None = <data_dir>/spool.")
    storage_flush_ms: int = Field(200, ge=1, le=60_000, description="Bars wait at most this long before a spool batch.")
    capture_trades: bool = Field(False, description="Also store every trade (ClickHouse + archive).")
    bar_retention_days: int = Field(30, ge=1, description="Days of 1-minute bars PostgreSQL keeps.")
    bar_compress_after_days: int = Field(2, ge=1, description="TimescaleDB: compress bar chunks older than this.")
    storage_flavor: Literal["auto", "native", "timescale"] = Field(
        "auto", description="PostgreSQL bar storage: auto = TimescaleDB when available, else native partitions.")
    warm_history_days: int = Field(5, ge=0, le=60,
                                   description="Past trading days loaded at start for indicators (0 = off).")
    archive_at_session_end: bool = Field(True, description="Archive the day to S3 when the session ends.")

    # notifier (procs/notifier/): runs when redis_url and at least one destination are configured
    notify_destinations: list[dict[str, Any]] = Field(
        default_factory=list, description="E-mail/webhook/SMS destinations (see scanner/notify/destinations.py).")
    notify_file: Path | None = Field(None, description="TOML ([[destinations]]) or JSON file of more destinations.")
    notify_group: str = Field("notifier", min_length=1, description="Consumer group on the alerts stream.")
    notify_dead_stream: str = Field("alerts:dead", min_length=1, description="Deliveries that kept failing.")
    notify_max_attempts: int = Field(6, ge=1, le=100, description="Attempts per delivery before dead-lettering.")
    notify_retry_base_s: float = Field(1.0, gt=0, description="First retry delay (doubles, jittered).")
    notify_retry_cap_s: float = Field(60.0, gt=0, description="Longest retry delay.")
    notify_claim_idle_s: float = Field(60.0, gt=0, description="Reclaim entries another notifier left this idle.")

    @field_validator("tick_ring_capacity", "bar_ring_capacity", "alert_ring_capacity", "block_rows")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v <= 0 or v & (v - 1):
            raise ValueError(f"must be a positive power of two, was {v}")
        return v

    @field_validator("feed_backoff_max_s")
    @classmethod
    def _backoff_bounds(cls, v: float, info: Any) -> float:
        lo = info.data.get("feed_backoff_min_s")
        if lo is not None and v < lo:
            raise ValueError(f"must be at least feed_backoff_min_s ({lo}), was {v}")
        return v

    @field_validator("api_keys")
    @classmethod
    def _strong_keys(cls, v: dict[SecretStr, str]) -> dict[SecretStr, str]:
        # the message never shows a key (settings errors are printed and logged)
        for i, key in enumerate(str(reveal(k)) for k in v):
            if len(key) < MIN_API_KEY_LEN:
                raise ValueError(f"API key #{i + 1} is {'empty' if not key else f'{len(key)} characters'}; "
                                 f"keys must be at least {MIN_API_KEY_LEN} characters")
            if key != key.strip() or any(c.isspace() or not c.isprintable() for c in key):
                raise ValueError(f"API key #{i + 1} contains whitespace or control characters")
        return v

    @field_validator("notify_destinations")
    @classmethod
    def _valid_destinations(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not v:  # the default: nothing to check, and no need to load the notifier's models (and numpy)
            return v
        from scanner.notify.destinations import parse_destinations  # lazy: keeps config import light

        parsed = parse_destinations(v)  # fail at load time, not in the child
        # the fields a destination types as secrets (passwords, HMAC keys, tokens, webhook header
        # values) become SecretStr here too, so no dump or repr of the settings shows them
        # (secret_json reveals them)
        return [{k: _as_secret(x, getattr(d, k, None)) for k, x in raw.items()}
                for raw, d in zip(v, parsed, strict=True)]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = os.environ.get("SCANNER_CONFIG")
        if toml:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    # -- secrets
    def secret_json(self) -> str:
        """Every setting as JSON with the secrets in clear: only for the 0600 settings file that
        hands the settings to child processes (`model_dump_json` masks them)."""
        data = self.model_dump(mode="json")
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                data[name] = value.get_secret_value()
        data["api_keys"] = {reveal(k): scope for k, scope in self.api_keys.items()}
        data["notify_destinations"] = [{k: _revealed(x) for k, x in d.items()} for d in self.notify_destinations]
        return json.dumps(data)

    # -- derived
    def n_scan_workers(self) -> int:
        return self.scan_workers or (os.cpu_count() or 1)

    def n_gateway_workers(self) -> int:
        """Gateway processes: as set, else one per two usable cores (each has its own feed slot)."""
        return self.gateway_workers or max(1, min(8, len(os.sched_getaffinity(0)) // 2))

    def block_shift(self) -> int:
        return self.block_rows.bit_length() - 1

    def paths(self) -> InstancePaths:
        return InstancePaths(self.instance, self.data_dir)

    def run_dir(self) -> Path:
        return self.paths().run_dir()

    def pidfile(self) -> Path:
        return self.paths().pidfile()

    def logfile(self) -> Path:
        return self.paths().logfile()

    def checkpoint_file(self) -> Path:
        return self.paths().checkpoint_file()

    def synthetic_market(self) -> bool:
        """The ticks come from the synthetic market: directly, or through Kafka from a bridge running
        it (no symbols_file): its universe, reference data and session clock apply."""
        return self.feed == "synthetic" or (self.feed == "kafka" and not self.symbols_file)

    def live_feed(self) -> bool:
        """A vendor WebSocket feed (alpaca, polygon)."""
        return self.feed in ("alpaca", "polygon")

    def reference_cache_dir(self) -> Path:
        """Per-day reference data of live feeds (universe, previous close, volumes)."""
        return self.run_dir() / "reference"

    def rules_in_postgres(self) -> bool:
        return self.rules_store == "postgres" or (self.rules_store == "auto" and bool(self.database_url))

    def rules_file(self) -> Path:
        return self.paths().rules_file()

    def spool_path(self) -> Path:
        return (self.spool_dir or self.data_dir / "spool").resolve()

    def storage_enabled(self) -> bool:
        """A storage writer runs when a database sink is configured."""
        return bool(self.database_url or self.clickhouse_url)

    def notifier_enabled(self) -> bool:
        """A notifier runs when Redis (its input) and at least one destination are configured."""
        return bool(self.redis_url) and bool(self.notify_destinations or self.notify_file)


def _as_secret(raw: Any, parsed: Any) -> Any:
    """A destination field as given, with what the parsed model types as secrets (a SecretStr,
    or a dict of them: webhook headers) wrapped in SecretStr."""
    if isinstance(parsed, SecretStr) and isinstance(raw, str):
        return SecretStr(raw)
    if isinstance(parsed, dict) and isinstance(raw, dict) and all(isinstance(x, SecretStr) for x in parsed.values()):
        return {k: SecretStr(x) if isinstance(x, str) else x for k, x in raw.items()}
    return raw


def _revealed(value: Any) -> Any:
    """Inverse of `_as_secret`, for the private settings file."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: x.get_secret_value() if isinstance(x, SecretStr) else x for k, x in value.items()}
    return value


def reveal(value: SecretStr | str | None) -> str | None:
    """The clear text of a secret setting (None stays None), at the point of use only."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@/\s]*)@")
_PASSWORD_PARAM = re.compile(r"(?i)\b(password|passwd|pwd|token|secret|api_key|apikey)=([^&\s'\"]+)")


def redact(text: str) -> str:
    """`text` with URL passwords (`scheme://user:***@host`) and password/token query or conninfo
    parameters (`password=***`) masked: applied to every log line."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _PASSWORD_PARAM.sub(lambda m: f"{m[1]}=***", text)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from env + TOML (`config_file` wins over `SCANNER_CONFIG`) + explicit overrides."""
    if config_file is not None:
        os.environ["SCANNER_CONFIG"] = str(config_file)
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
