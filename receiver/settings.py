"""The settings tree: one YAML file, ``RECEIVER_`` environment overrides, secrets from files.

This is the only module that reads ``os.environ``. Everything downstream receives a
frozen ``Settings`` and never looks anywhere else. Environment variables override the
file, nested with ``__``: ``RECEIVER_KAFKA__BOOTSTRAP_SERVERS=broker:9092``.
Credentials are ``SecretStr`` so no repr, log line or error message can show one;
``*_file`` fields are read once here, at load time, so Kubernetes secret volumes work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    IPvAnyNetwork,
    PrivateAttr,
    SecretStr,
    StringConstraints,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from receiver.auth.material import read_secret
from receiver.auth.methods import AuthSettings
from receiver.errors import ConfigError
from receiver.vendors import VENDORS
from receiver.vendors.base import DEFAULT_MAX_BATCH_ITEMS

SourceId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
TopicName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,200}$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RateLimitSettings(_Frozen):
    """A request budget per minute (Soracom's model: a fixed one-minute window)."""

    requests_per_minute: int = Field(gt=0)


class SourceSettings(_Frozen):
    """One sender: its vendor kind, the ways it may authenticate, and its limits.

    What a kind adds (the iotcomms domain, Sigfox downlinks, the generic schema) is its
    vendor's options model: each kind's settings are these fields plus those.
    """

    kind: str
    auth: list[AuthSettings] = Field(min_length=1)
    topic: TopicName | None = Field(default=None, description="overrides <prefix>.<kind>.<event>")
    allowed_ips: list[IPvAnyNetwork] = Field(default_factory=list, description="sender CIDRs; empty: any")
    rate_limit: RateLimitSettings | None = Field(default=None, description="the source's request budget")
    require_roles: list[str] = Field(default_factory=list, description="token roles every request needs")
    restrict_to_token_groups: bool = Field(
        default=False, description="a device message must name a group the token carries"
    )
    include_raw: bool = Field(default=True, description="keep the vendor body in the event beside the reading")
    on_invalid: Literal["refuse", "accept"] = Field(
        default="refuse", description="refuse: 422; accept: 202, and the payload only goes to the dead-letter topic"
    )
    single_use_on_state_outage: Literal["refuse", "local"] = Field(
        default="refuse",
        description="when the shared state is unavailable, single-use ids: refuse (503) or check this process's memory",
    )
    dedup_window_seconds: int = Field(
        default=0, ge=0, description="an event id seen again within it is not republished"
    )
    max_batch_items: int = Field(
        default=DEFAULT_MAX_BATCH_ITEMS,
        ge=1,
        le=100_000,
        description="a JSON array with more items is refused (413) before validation",
    )
    answers: dict[str, Any] = Field(
        default_factory=dict, description="static JSON answer per callback name (iotcomms newCall, getIvrCommand)"
    )
    webhook_origins: list[str] = Field(
        default_factory=list, description="origins the CloudEvents webhook handshake allows ('*': any)"
    )


def _kind_settings(kind: str) -> type[SourceSettings]:
    """The settings of one kind: the common fields and its vendor's options, ``kind`` fixed."""
    options = VENDORS[kind].Options
    name = f"{kind.title()}SourceSettings"
    return create_model(name, __base__=(SourceSettings, options), kind=(Literal[kind], ...))  # type: ignore[arg-type]


_UNKNOWN = "(unknown kind)"


class _UnknownKindSettings(SourceSettings):
    """A source whose kind no vendor has: its common fields are still checked, so every problem shows."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        msg = f"{kind[:40]!r} is not a kind; use one of {', '.join(VENDORS)}"
        raise ValueError(msg)


def _kind_of(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if isinstance(kind, str) and kind in VENDORS else _UNKNOWN


_MEMBERS = tuple(Annotated[_kind_settings(kind), Tag(kind)] for kind in VENDORS)

if TYPE_CHECKING:
    AnySourceSettings = SourceSettings
else:  # discriminated by ``kind``: one member per registered vendor, and one that names the mistake
    AnySourceSettings = Annotated[
        Union[(*_MEMBERS, Annotated[_UnknownKindSettings, Tag(_UNKNOWN)])],
        Discriminator(_kind_of),
    ]


class RouteMatch(_Frozen):
    """What a rule matches; every given field must match (subject: a shell-style pattern)."""

    source: str | None = None
    kind: str | None = None
    event: str | None = None
    group: str | None = None
    subject: str | None = None


class RouteRule(_Frozen):
    """Send matching events to ``topics``, keyed by ``key``, with extra ``headers``."""

    match: RouteMatch = RouteMatch()
    topics: list[TopicName] = Field(min_length=1)
    key: Literal["subject", "source", "device", "none"] = "subject"
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _not_cloudevents(cls, headers: dict[str, str]) -> dict[str, str]:
        taken = sorted(name for name in headers if name.lower().startswith("ce_") or name.lower() == "content-type")
        if taken:
            msg = f"{', '.join(taken)}: ce_* and content-type headers belong to the CloudEvents binding; rename them"
            raise ValueError(msg)
        return headers


ContentMode = Literal["structured", "binary"]


class TopicSettings(_Frozen):
    """Startup checks of the target topics; ``create`` makes the missing ones."""

    check: bool = True
    create: bool = False
    partitions: int = Field(default=3, ge=1)
    replication_factor: int = Field(default=1, ge=1)


class DryRunSettings(_Frozen):
    """``POST /v1/dry-run/...``: off unless enabled, behind its own admin token."""

    enabled: bool = False
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _token_when_enabled(self) -> DryRunSettings:
        if self.enabled and self.token_sha256 is None:
            raise ValueError("dry_run needs token_sha256 (sha256 hex of the admin token) when enabled")
        return self


class KafkaSettings(_Frozen):
    """The Kafka producer; without ``bootstrap_servers`` events go to the embedded store."""

    bootstrap_servers: str | None = Field(default=None, description="host:port[,host:port...]")
    topic_prefix: TopicName = "iot"
    client_id: str = "iot-receiver"
    publish_timeout_seconds: float = Field(
        default=3.0, gt=0, le=300, description="ack wait before 503; well under a sender's own timeout"
    )
    max_pending_records: int = Field(
        default=20_000, ge=100, description="records handed to the producer and not yet acknowledged; past it, 503"
    )
    shutdown_timeout_seconds: float = Field(default=5.0, gt=0, le=300, description="flush wait on stop")
    linger_ms: int = Field(default=0, ge=0, le=1000, description="0: batch only what queues while a send is in flight")
    request_timeout_ms: int = Field(default=30000, ge=1000)
    max_batch_size: int = Field(default=1048576, ge=1024)
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    content_mode: ContentMode = Field(
        default="structured", description="CloudEvents Kafka binding: the whole envelope as the value, or binary"
    )
    topics: TopicSettings = TopicSettings()

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                msg = f"{server.strip()!r} is not host:port"
                raise ValueError(msg)
        return value.strip()


class StoreSettings(_Frozen):
    """The embedded SQLite event store used when no Kafka is configured."""

    path: Path = Path(".data/events.db")


class TracingSettings(_Frozen):
    """OpenTelemetry spans (needs the ``otel`` extra); ``traceparent`` is passed on regardless."""

    enabled: bool = False
    service_name: str = "iot-receiver"
    exporter: Literal["otlp", "console", "none"] = Field(
        default="otlp", description="otlp reads the standard OTEL_EXPORTER_OTLP_* variables"
    )


class AuditSettings(_Frozen):
    """One audit record per request, on ``<topic_prefix>.audit`` (or the embedded store)."""

    enabled: bool = True
    topic: TopicName | None = Field(default=None, description="default <topic_prefix>.audit")
    unauthenticated_per_second: float = Field(
        default=20.0, ge=0, description="records per second for refusals before authentication; the rest summarized"
    )
    summary_interval_seconds: float = Field(default=10.0, gt=0, le=3600)
    flush_interval_seconds: float = Field(default=0.5, gt=0, le=60, description="audit batches are written this often")


class StateSettings(_Frozen):
    """Where replay reservations, the dedup window and request budgets live.

    No ``url``: in this process's memory (one replica, one worker). ``redis://`` or
    ``rediss://``: shared by every replica and worker through Redis (or Valkey).
    """

    url: str | None = Field(default=None, description="redis://host:6379/0 or rediss://...; none: in process")
    password_file: Path | None = Field(default=None, description="the Redis password, read once at load")
    username: str | None = Field(default=None, description="the Redis ACL user")
    key_prefix: str = Field(
        default="receiver:", pattern=r"^[A-Za-z0-9:._-]{1,64}$", description="one per deployment sharing a Redis"
    )
    timeout_seconds: float = Field(
        default=0.25, gt=0, le=5, description="a Redis call slower than this counts as Redis unavailable"
    )
    tls_ca_file: Path | None = Field(default=None, description="CA bundle for rediss://; none: the system's")

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in ("redis", "rediss") or not rest:
            msg = "must be redis://host:port/db or rediss://host:port/db"
            raise ValueError(msg)
        if "@" in rest.partition("/")[0]:
            # The url is logged and shown in errors; a password belongs in password_file.
            msg = "must not carry credentials; set state.username and state.password_file"
            raise ValueError(msg)
        # redis-py turns every query key into a connection option: ``?password=`` would work,
        # and then be shown wherever the url is.
        for pair in rest.partition("?")[2].split("&"):
            name = pair.partition("=")[0].lower()
            if any(word in name for word in ("pass", "user", "secret", "token", "auth", "key")):
                msg = f"must not carry credentials in its query ({name}); set state.username and state.password_file"
                raise ValueError(msg)
        return value

    _password: SecretStr | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _read_password(self) -> StateSettings:
        if self.password_file is not None:
            self._password = read_secret(self.password_file)
        return self

    def password(self) -> str | None:
        """The Redis password read from ``password_file`` at load time."""
        return None if self._password is None else self._password.get_secret_value()

    @property
    def shared(self) -> bool:
        """True when every replica and worker sees the same state."""
        return self.url is not None


MAX_WORKERS = 64


class ServerSettings(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, gt=0, lt=65536)
    workers: int | Literal["auto"] = Field(
        default="auto", description="worker processes; auto: the available CPUs when state is shared, else 1"
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="larger bodies get 413")
    max_header_bytes: int = Field(default=16384, ge=1024, description="larger header sections get 431")
    max_headers: int = Field(default=100, ge=10, description="more header lines get 431")
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="a request's headers must arrive within this; else 408 and close"
    )
    body_timeout_seconds: float = Field(
        default=15.0, gt=0, le=600, description="a delivery's body must arrive within this; else 408 and close"
    )
    keepalive_timeout_seconds: float = Field(
        default=5.0, gt=0, le=300, description="an idle keep-alive connection is closed after this"
    )
    max_connections: int | None = Field(
        default=None, ge=16, description="open connections per process (idle closed first); none: fd limit - 64"
    )
    max_in_flight: int = Field(
        default=256, ge=1, description="deliveries with a complete body handled at once per process; past it, 503"
    )
    max_reading: int = Field(
        default=1024, ge=1, description="deliveries still sending their body, per process; past it, 503 overloaded"
    )
    max_reading_per_address: int = Field(
        default=64, ge=1, description="of max_reading, what one client address (an IPv6 /64) may hold; past it, 503"
    )
    max_wait_ms: int = Field(
        default=50, ge=0, description="a delivery that waited longer for the app to see it gets 503 at once; 0: off"
    )
    max_loop_lag_ms: int = Field(
        default=1000, ge=0, description="while the event loop runs this late, new connections get 503 and close; 0: off"
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list, description="peers whose X-Forwarded-For is believed"
    )
    failure_limit_per_minute: int = Field(
        default=60, ge=0, description="unauthenticated failures per client IP per source and minute; 0: no limit"
    )
    reload_interval_seconds: float = Field(
        default=0, ge=0, description="poll key and secret files for changes this often; 0: only on SIGHUP"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = Field(default="auto", description="auto: console on a tty")
    shutdown_grace_seconds: float = Field(
        default=20.0, gt=0, le=600, description="on SIGTERM, how long in-flight requests may take to finish"
    )
    drain_seconds: float = Field(
        default=0.0, ge=0, le=120, description="on SIGTERM, keep serving this long with /readyz at 503 first"
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        # One message for both halves of the union (the environment gives a string).
        if value == "auto":
            return value
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WORKERS:
            return value
        msg = f"must be auto or a whole number from 1 to {MAX_WORKERS}"
        raise ValueError(msg)


class Settings(BaseSettings):
    """The whole configuration, frozen once loaded."""

    model_config = SettingsConfigDict(env_prefix="RECEIVER_", env_nested_delimiter="__", frozen=True, extra="forbid")

    server: ServerSettings = ServerSettings()
    kafka: KafkaSettings = KafkaSettings()
    store: StoreSettings = StoreSettings()
    tracing: TracingSettings = TracingSettings()
    audit: AuditSettings = AuditSettings()
    state: StateSettings = StateSettings()
    routes: list[RouteRule] = Field(default_factory=list, description="ordered; the first match wins")
    dry_run: DryRunSettings = DryRunSettings()
    sources: dict[SourceId, AnySourceSettings] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment must win over it.
        del dotenv_settings, file_secret_settings
        return (env_settings, init_settings) if getattr(settings_cls, "environment", True) else (init_settings,)


def _problems(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = list(error["loc"])
        if len(loc) > 2 and loc[0] == "sources" and (loc[2] in VENDORS or loc[2] == _UNKNOWN):
            del loc[2]  # the kind the union chose, already said by the source's own `kind`
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):  # an auth method's `type`
            loc.append(str((error.get("ctx") or {}).get("discriminator", "type")).strip("'"))
            message = f"must be one of {(error.get('ctx') or {}).get('expected_tags', '')}"
        path = ".".join(str(part) for part in loc if not str(part).startswith("function-"))
        lines.append(f"{path or '(top)'}: {message}")
    return lines


class _MappingOnly(Settings):
    """The same tree, from the given mapping alone: no ``RECEIVER_*`` variable reaches it."""

    environment: ClassVar[bool] = False


def build_settings(data: dict[str, Any], *, environ: bool = True) -> Settings:
    """Validate a config mapping; with ``environ``, ``RECEIVER_*`` variables override it."""
    try:
        return Settings(**data) if environ else _MappingOnly(**data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from exc


def load_settings(path: Path | None, *, environ: bool = True) -> Settings:
    """Load the YAML file at ``path`` (or none: defaults plus environment)."""
    data: Any = {}
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError([f"(file): cannot read {path}: {exc.strerror}"]) from exc
        except yaml.YAMLError as exc:
            # The parser's own message quotes the offending line, which may hold a secret.
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "a syntax error"
            raise ConfigError([f"(file): {path} is not valid YAML: {problem}{where}"]) from exc
        if not isinstance(data, dict):
            raise ConfigError([f"(file): {path} must hold a mapping at the top level"])
    return build_settings(data, environ=environ)


def config_path_from_env() -> Path | None:
    """``RECEIVER_CONFIG``, the config path when ``--config`` is not given."""
    value = os.environ.get("RECEIVER_CONFIG")
    return Path(value) if value else None


METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir_from_env() -> Path | None:
    """``PROMETHEUS_MULTIPROC_DIR``: set by ``receiver serve`` for its workers when it runs several.

    prometheus_client reads it too, when first imported: each worker then writes its
    metric values to files there, and whichever worker serves ``/metrics`` reads them all.
    """
    value = os.environ.get(METRICS_DIR_VARIABLE)
    return Path(value) if value else None
