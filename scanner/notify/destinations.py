"""Where alerts go to people and programs: e-mail, webhook, SMS destinations with their filters.

Configured inline (`Settings.notify_destinations`, a list of dicts) and/or in a TOML or JSON file
(`Settings.notify_file`: `[[destinations]]` tables, or a JSON list / `{"destinations": [...]}`).
Every destination has a unique `name` (it appears in the dead-letter stream), a `kind`, filters
(all must hold; an empty list means "any") and its delivery policy (rate limit, attempts, timeout).
Secrets are `SecretStr` so they never show in a repr or a log line.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, field_validator

from scanner.rules.limits import Severity

SEVERITIES: tuple[str, ...] = get_args(Severity)  # lowest first
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


def severity_rank(severity: object) -> int:
    """Position in SEVERITIES; an unknown severity ranks as the lowest ("info")."""
    try:
        return SEVERITIES.index(str(severity))
    except ValueError:
        return 0


class DestinationBase(BaseModel):
    """Filters and delivery policy shared by every kind."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)  # inputs hold secrets

    name: str = Field(pattern=NAME_PATTERN, description="Unique; names the destination in logs and dead letters.")
    enabled: bool = True
    # filters: all must hold; an empty list matches anything
    rules: list[str] = Field(default_factory=list, description="Rule ids to forward.")
    symbols: list[str] = Field(default_factory=list, description="Symbols to forward (case-insensitive).")
    tags: list[str] = Field(default_factory=list, description="Forward alerts whose rule has any of these tags.")
    min_severity: Severity = "info"
    kinds: list[Literal["enter", "exit"]] = Field(default_factory=lambda: ["enter", "exit"])
    # delivery policy
    rate_per_minute: float | None = Field(None, gt=0, description="Token refill rate; None = unlimited.")
    burst: int = Field(10, ge=1, description="Token bucket size: sends allowed at once.")
    on_rate_limit: Literal["delay", "drop"] = Field(
        "delay", description="delay: hold alerts until a token frees; drop: dead-letter them as 'rate limited'.")
    max_attempts: int | None = Field(None, ge=1, le=100, description="None = Settings.notify_max_attempts.")
    timeout_s: float = Field(10.0, gt=0, le=120, description="Per attempt (connect + send).")
    concurrency: int = Field(2, ge=1, le=16, description="Attempts in flight at once for this destination.")

    @field_validator("symbols")
    @classmethod
    def _upper(cls, v: list[str]) -> list[str]:
        return [s.upper() for s in v]

    def accepts(self, alert: dict[str, Any]) -> bool:
        """Whether this alert (the stream's JSON shape, see scanner.alert_json) passes the filters."""
        if self.rules and alert.get("rule") not in self.rules:
            return False
        if self.symbols and str(alert.get("symbol", "")).upper() not in self.symbols:
            return False
        if self.tags and not set(self.tags).intersection(alert.get("tags") or ()):
            return False
        if alert.get("kind", "enter") not in self.kinds:
            return False
        return severity_rank(alert.get("severity")) >= severity_rank(self.min_severity)


class EmailDestination(DestinationBase):
    """SMTP: one message per alert to all of `to`."""

    kind: Literal["email"]
    smtp_host: str
    smtp_port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    from_addr: str = Field(min_length=3)
    to: list[str] = Field(min_length=1)
    subject_prefix: str = "[scanner]"


class WebhookDestination(DestinationBase):
    """HTTP POST of the alert JSON, signed with HMAC-SHA256 (see scanner.notify.signing)."""

    kind: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr = Field(description="Shared HMAC key (at least 16 characters).")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Extra request headers (values are secrets: they often carry tokens).")

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 16:
            raise ValueError("'secret' must have at least 16 characters")
        return v


class SmsDestination(DestinationBase):
    """Twilio-style message API: form POST of To/From/Body with basic auth account_sid:auth_token."""

    kind: Literal["sms"]
    base_url: str = Field("https://api.twilio.com", pattern=r"^https?://")
    account_sid: str = Field(min_length=1)
    auth_token: SecretStr
    from_number: str = Field(min_length=1)
    to: list[str] = Field(min_length=1)

    def messages_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/2010-04-01/Accounts/{self.account_sid}/Messages.json"


Destination = Annotated[EmailDestination | WebhookDestination | SmsDestination, Field(discriminator="kind")]
_LIST = TypeAdapter(list[Destination])


def parse_destinations(raw: list[dict[str, Any]]) -> list[Destination]:
    """Validate a list of destination dicts; names must be unique. Raises ValueError."""
    dests = _LIST.validate_python(raw)
    seen: set[str] = set()
    for d in dests:
        if d.name in seen:
            raise ValueError(f"destination name {d.name!r} is used twice")
        seen.add(d.name)
    return dests


def read_destination_file(path: Path) -> list[dict[str, Any]]:
    """Raw destination dicts from a TOML (`[[destinations]]`) or JSON file."""
    text = Path(path).read_text()
    doc: Any = tomllib.loads(text) if Path(path).suffix == ".toml" else json.loads(text)
    if isinstance(doc, dict):
        doc = doc.get("destinations", [])
    if not isinstance(doc, list):
        raise ValueError(f"{path}: expected a list of destinations")
    return doc


def load_destinations(inline: list[dict[str, Any]], file: Path | None = None) -> list[Destination]:
    """Inline destinations plus those in `file`, validated; disabled ones left out."""
    raw = list(inline) + (read_destination_file(file) if file is not None else [])
    return [d for d in parse_destinations(raw) if d.enabled]
