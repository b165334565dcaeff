"""Every setting of the assistant, read once from the environment (and `.env`).

Settings are validated when they are loaded, so a mistyped value stops the
assistant at start-up with a message naming the variable, instead of surfacing
as a wrong answer to a shopper later.  Nothing here runs at import time:
call :func:`get_settings`.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values
from pydantic import BaseModel, Field, ValidationError, root_validator, validator

from bot.domain.agent_hours import parse_hours
from bot.domain.policy import Policy
from bot.domain.updates import parse_quiet_hours

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Secrets that ship in `.env.example` or older examples; refused wherever they would protect something.
PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "dev-token-change-me"})
#: `secrets.token_urlsafe(32)` gives 43 characters; anything shorter than this is guessable.
MIN_SECRET_CHARS = 32


#: The listen address each server token protects.
_TOKEN_HOSTS = {"rasa_auth_token": "rasa_host", "action_server_token": "action_host"}


def weak_secret(value: str) -> bool:
    """A placeholder, or too short to resist guessing."""
    return value.strip().lower() in PLACEHOLDER_SECRETS or len(value.strip()) < MIN_SECRET_CHARS


def is_loopback(host: str) -> bool:
    """Whether a listen address is reachable from this machine only."""
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


#: Meta's Graph API, which WhatsApp Cloud and the Messenger Send API are part of.
GRAPH_API_BASE_URL = "https://graph.facebook.com/v21.0"

#: The settings each optional channel needs; all set switches the channel on.
CHANNEL_SECRETS: Dict[str, tuple] = {
    "whatsapp": ("whatsapp_verify_token", "whatsapp_app_secret", "whatsapp_access_token",
                 "whatsapp_phone_number_id"),
    "messenger": ("messenger_verify_token", "messenger_app_secret", "messenger_page_access_token"),
}


#: The Redis pub/sub channel the widget's rooms are shared on; one per shop when shops share a Redis.
DEFAULT_WIDGET_REDIS_CHANNEL = "wismo-widget"
#: A pub/sub channel name: no spaces, nothing a shell or a log line would mangle.
REDIS_CHANNEL = re.compile(r"[A-Za-z0-9._:-]{1,100}")


def redis_url_problem(url: str) -> Optional[str]:
    """Why `url` is not a Redis URL redis-py can connect to, or None if it is one.

    The reason never repeats the URL, which may carry a password.
    """
    if not url or any(char.isspace() for char in url):
        return "a URL without spaces such as redis://redis.internal:6379/0"
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        return "must start with redis://, rediss:// (TLS) or unix://"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return "the port is not a number from 1 to 65535"
    if parts.scheme == "unix":
        if not parts.path:
            return "a unix:// URL needs the socket's path, e.g. unix:///run/redis/redis.sock"
    elif not parts.hostname:
        return "needs a host, e.g. redis://redis.internal:6379/0"
    elif not re.fullmatch(r"/?\d*", parts.path):
        return "the path after the host can only be a database number, e.g. /0"
    from redis.connection import parse_url

    try:
        parse_url(url)  # the options after "?", checked as redis-py will read them
    except ValueError as exc:
        return str(exc)
    return None


class SettingsError(Exception):
    """A setting is missing or has a value the assistant cannot use."""


class Settings(BaseModel):
    """Runtime settings; see `.env.example` for what each one does."""

    env: str = "development"
    database_url: str = "sqlite:///wismo.db"
    shop_name: str = "Wild Sparrow Home"
    shop_timezone: str = "Europe/Amsterdam"
    shop_currency: str = "EUR"
    order_number_prefix: str = "WS-"
    rasa_host: str = "127.0.0.1"
    rasa_port: int = Field(default=5005, ge=1, le=65535)
    action_host: str = "127.0.0.1"
    action_port: int = Field(default=5055, ge=1, le=65535)
    #: Protects the Rasa HTTP API; `python -m bot setup` writes a random one to .env.
    rasa_auth_token: str = ""
    #: Every call from the Rasa server to the action server carries it; setup writes one to .env.
    action_server_token: str = ""
    #: Empty: browsers may call the Rasa HTTP API only from the assistant's own pages.
    rasa_cors_origins: str = ""
    #: The REST channel in production: off unless set, and then it needs `Authorization: Bearer`.
    rest_token: str = ""
    #: A verified order stays verified this long without a message about it.
    verification_ttl_minutes: int = Field(default=30, ge=1, le=24 * 60)
    rasa_endpoints: str = "endpoints.yml"
    rasa_credentials: str = "credentials.yml"
    # Channels.  A channel is switched on by setting all of its secrets.
    widget_origins: str = ""
    #: Shares the widget's socket.io rooms between Rasa replicas; empty: each process keeps its own.
    widget_redis_url: str = ""
    widget_redis_channel: str = DEFAULT_WIDGET_REDIS_CHANNEL
    whatsapp_verify_token: str = ""
    whatsapp_app_secret: str = ""
    whatsapp_access_token: str = ""
    whatsapp_phone_number_id: str = ""
    whatsapp_api_base_url: str = GRAPH_API_BASE_URL
    messenger_verify_token: str = ""
    messenger_app_secret: str = ""
    messenger_page_access_token: str = ""
    messenger_api_base_url: str = GRAPH_API_BASE_URL
    # People: the agent console and the hand-off.
    console_port: int = Field(default=5006, ge=1, le=65535)
    rasa_url: str = ""
    agent_hours: str = "mon-fri 09:00-17:00"
    agent_online_minutes: int = Field(default=2, ge=1, le=120)
    agent_minutes_per_conversation: int = Field(default=5, ge=1, le=240)
    #: In agent hours with no console open: the reply time a shopper handed over is promised.
    agent_reply_minutes: int = Field(default=30, ge=1, le=24 * 60)
    agent_session_hours: int = Field(default=8, ge=1, le=24 * 30)
    helpdesk_url: str = ""
    helpdesk_secret: str = ""
    # Proactive updates (a live tracking feed and messages to subscribed shoppers).
    #: Turns on POST /webhooks/aftership/webhook; AfterShip signs every call with it.
    aftership_webhook_secret: str = ""
    #: Turns on POST /webhooks/tracking/webhook for the project's own event format, signed with it.
    tracking_webhook_secret: str = ""
    #: The most updates one order may send in a shop day.
    notify_max_per_order_per_day: int = Field(default=3, ge=1, le=50)
    #: "21:00-08:00" in SHOP_TIMEZONE: updates wait until it ends; empty: no quiet hours.
    notify_quiet_hours: str = "21:00-08:00"
    #: Also tell subscribed shoppers when the parcel is delivered.
    notify_delivered: bool = False
    #: How often the outbox and the stalled-parcel sweep look for work, in seconds.
    notify_poll_seconds: float = Field(default=2.0, ge=0.2, le=600)
    notify_sweep_minutes: int = Field(default=30, ge=1, le=24 * 60)
    #: An approved WhatsApp utility template for updates outside the 24-hour window (order, status, date).
    whatsapp_update_template: str = ""
    whatsapp_template_language: str = "en"
    #: A Messenger utility message template for updates outside the 24-hour window.
    messenger_update_template: str = ""
    messenger_template_language: str = "en"
    policy: Policy = Policy()

    class Config:
        frozen = True

    @validator("env")
    def _env(cls, value: str) -> str:
        if value not in {"development", "production", "test"}:
            raise ValueError("must be development, production or test")
        return value

    @validator("database_url")
    def _database_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL ({exc})") from None
        if url.get_backend_name() not in {"sqlite", "postgresql"}:
            raise ValueError("only sqlite:/// and postgresql:// URLs are supported")
        return value

    @validator("shop_timezone")
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone such as Europe/Amsterdam") from None
        return value

    @validator("shop_currency")
    def _currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError("an ISO 4217 code such as EUR")
        return value

    @validator("action_port")
    def _ports_differ(cls, value: int, values: Dict[str, object]) -> int:
        if value == values.get("rasa_port"):
            raise ValueError("must differ from RASA_PORT")
        return value

    @validator("rasa_auth_token", "action_server_token", always=True)
    def _server_token(cls, value: str, values: Dict[str, object], field: Any) -> str:
        # Each token guards a server; it must be strong where that server can be reached or serves shoppers.
        host = _TOKEN_HOSTS[field.name]
        exposed = values.get("env") == "production" or not is_loopback(str(values.get(host, "")))
        if exposed and weak_secret(value):
            raise ValueError(f"a random secret of at least {MIN_SECRET_CHARS} characters is needed in production "
                             f"or when {host.upper()} is not loopback (`python -m bot setup` writes one to .env)")
        return value

    @validator("rest_token", always=True)
    def _rest_token(cls, value: str, values: Dict[str, object]) -> str:
        if value and weak_secret(value):
            raise ValueError(f"use a random secret of at least {MIN_SECRET_CHARS} characters, or leave it empty")
        return value

    @validator("rasa_cors_origins")
    def _cors(cls, value: str, values: Dict[str, object]) -> str:
        origins = [part.strip() for part in value.split(",") if part.strip()]
        if "*" in origins and values.get("env") == "production":
            raise ValueError("'*' lets every web page call the Rasa HTTP API; list the origins that need it")
        for origin in origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin such as https://shop.example.com (no path)")
        return value

    @validator("widget_origins")
    def _origins(cls, value: str) -> str:
        for origin in (part.strip() for part in value.split(",")):
            if origin and origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin such as https://shop.example.com (no path)")
        return value

    @validator("widget_redis_url")
    def _widget_redis_url(cls, value: str) -> str:
        problem = redis_url_problem(value.strip()) if value.strip() else None
        if problem:
            raise ValueError(problem)
        return value.strip()

    @validator("widget_redis_channel")
    def _widget_redis_channel(cls, value: str) -> str:
        if not REDIS_CHANNEL.fullmatch(value):
            raise ValueError("letters, digits and . _ : - only (at most 100), e.g. wismo-widget")
        return value

    @validator("console_port")
    def _console_port_free(cls, value: int, values: Dict[str, object]) -> int:
        if value in (values.get("rasa_port"), values.get("action_port")):
            raise ValueError("must differ from RASA_PORT and ACTION_PORT")
        return value

    @validator("agent_hours")
    def _agent_hours(cls, value: str) -> str:
        parse_hours(value)  # raises ValueError with the reason
        return value

    @validator("notify_quiet_hours")
    def _quiet_hours(cls, value: str) -> str:
        parse_quiet_hours(value)  # raises ValueError with the reason
        return value.strip()

    @validator("aftership_webhook_secret", "tracking_webhook_secret")
    def _feed_secret(cls, value: str, values: Dict[str, object]) -> str:
        if value and values.get("env") == "production" and weak_secret(value):
            raise ValueError(f"use the feed's random secret (at least {MIN_SECRET_CHARS} characters), "
                             "or leave it empty")
        return value.strip()

    @validator("rasa_url", "helpdesk_url")
    def _optional_url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://\S+", value):
            raise ValueError("an http(s) URL")
        return value.rstrip("/")

    @validator("helpdesk_secret", always=True)
    def _helpdesk_secret(cls, value: str, values: Dict[str, object]) -> str:
        if values.get("helpdesk_url") and not value.strip():
            raise ValueError("set it with HELPDESK_URL: every handoff posted there is signed with it")
        return value

    @validator("whatsapp_api_base_url", "messenger_api_base_url")
    def _base_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://\S+", value):
            raise ValueError("an http(s) URL such as https://graph.facebook.com/v21.0")
        return value.rstrip("/")

    @root_validator(skip_on_failure=True)
    def _channels_complete(cls, values: Dict[str, object]) -> Dict[str, object]:
        # A half-configured channel is a mistake that would otherwise only show
        # when Meta first calls the webhook.
        for channel, fields in CHANNEL_SECRETS.items():
            given = [f for f in fields if str(values.get(f) or "").strip()]
            if given and len(given) < len(fields):
                missing = ", ".join(f.upper() for f in fields if f not in given)
                raise ValueError(f"the {channel} channel is half configured: also set {missing}")
            if given and values.get("env") == "production":
                weak = [f.upper() for f in fields if str(values[f]).strip().lower() in PLACEHOLDER_SECRETS]
                if weak:
                    raise ValueError(f"set real secrets in production: {', '.join(weak)}")
        return values

    def channel_enabled(self, channel: str) -> bool:
        """Whether every secret of `channel` ("whatsapp", "messenger") is set."""
        return all(str(getattr(self, field)).strip() for field in CHANNEL_SECRETS[channel])

    @property
    def widget_origin_list(self) -> List[str]:
        return [part.strip() for part in self.widget_origins.split(",") if part.strip()]

    @property
    def rasa_api_url(self) -> str:
        """Where the console reaches the Rasa HTTP API (RASA_URL, else this machine's server)."""
        return self.rasa_url or f"http://127.0.0.1:{self.rasa_port}"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.shop_timezone)

    @property
    def action_endpoint_url(self) -> str:
        host = "127.0.0.1" if self.action_host in ("0.0.0.0", "::") else self.action_host
        return f"http://{host}:{self.action_port}/webhook"

    def unsafe_for_production(self) -> List[str]:
        """What would be unsafe if these settings served real shoppers (`check-settings` lists it)."""
        found = []
        if weak_secret(self.rasa_auth_token):
            found.append("RASA_AUTH_TOKEN is missing, a placeholder or shorter than 32 characters")
        if weak_secret(self.action_server_token):
            found.append("ACTION_SERVER_TOKEN is missing, a placeholder or shorter than 32 characters")
        if "*" in self.rasa_cors_origins:
            found.append("RASA_CORS_ORIGINS is '*': any web page may call the Rasa HTTP API")
        if "*" in self.widget_origin_list:
            found.append("WIDGET_ORIGINS is '*': any web page may open the widget's socket")
        if not is_loopback(self.action_host):
            found.append(f"ACTION_HOST is {self.action_host}: the action server is reachable from other machines "
                         "(keep it on a private network)")
        if self.database_url.startswith("sqlite"):
            found.append("DATABASE_URL is SQLite: use PostgreSQL for a shop's real orders")
        if self.env != "production":
            found.append(f"BOT_ENV is {self.env}: production checks are off")
        return found

    def path(self, relative: str) -> Path:
        """Resolve a path setting against the project root."""
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else PROJECT_ROOT / candidate


#: environment variable -> field.  Policy fields use the POLICY_ prefix.
_TOP_LEVEL = {name: name.upper() for name in Settings.__fields__ if name != "policy"}
_TOP_LEVEL["env"] = "BOT_ENV"
_POLICY = {name: f"POLICY_{name.upper()}" for name in Policy.__fields__}


def env_variable_names() -> Dict[str, str]:
    """Every environment variable the settings read, mapped to its field."""
    names = {env: field for field, env in _TOP_LEVEL.items()}
    names.update({env: f"policy.{field}" for field, env in _POLICY.items()})
    return names


def load_settings(
    environ: Optional[Dict[str, str]] = None, env_file: Optional[Path] = None
) -> Settings:
    """Build settings from `.env` overlaid by the process environment.

    Raises:
        SettingsError: naming every variable whose value is unusable.
    """
    source: Dict[str, Optional[str]] = {}
    dotenv_path = env_file if env_file is not None else PROJECT_ROOT / ".env"
    if dotenv_path.is_file():
        source.update(dotenv_values(dotenv_path))
    source.update(os.environ if environ is None else environ)

    # Raw strings: pydantic converts and validates them, naming what it refuses.
    top: Dict[str, Any] = {field: source[env] for field, env in _TOP_LEVEL.items() if source.get(env) is not None}
    rules: Dict[str, Any] = {field: source[env] for field, env in _POLICY.items() if source.get(env) is not None}
    problems = []
    policy = None
    try:
        policy = Policy(**rules)
    except ValidationError as exc:
        problems += _describe(exc, _POLICY)
    try:
        settings = Settings(**top, policy=policy or Policy())
    except ValidationError as exc:
        problems += _describe(exc, _TOP_LEVEL)
    if problems:
        raise SettingsError(
            "Invalid settings (in .env or the environment):\n" + "\n".join(problems)
        )
    return settings


def _describe(exc: ValidationError, names: Dict[str, str]) -> List[str]:
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "__root__"
        if field == "__root__":
            lines.append(f"  {error['msg']}")
        else:
            lines.append(f"  {names.get(field, field.upper())}: {error['msg']}")
    return lines


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded on first use."""
    return load_settings()
