"""The server's configuration: one typed object read from a TOML file (`--config`), overridden by
`SFU_*` environment variables (sections nested with `__`), overridden by command-line flags.
Every key is documented, with its default and unit, in config/reference.toml."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from aiortc import RTCIceServer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "SFU_"
ENV_NESTED_DELIMITER = "__"

_config_file: ContextVar[Path | None] = ContextVar("sfu_config_file", default=None)


class ConfigError(ValueError):
    """A configuration that cannot start a server; the message names the offending key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IceServer(Section):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class ServerSection(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    shutdown_timeout_s: float = Field(default=5.0, gt=0)
    drain_timeout_s: float = Field(default=30.0, ge=0)
    debug_endpoints: bool = False
    loop_heartbeat_s: float = Field(default=0.1, ge=0.005, le=10.0)
    # gc.freeze() once started: the cyclic collector no longer walks the ~100k objects of the imported
    # libraries in every full collection (a pause on the loop, so on every packet; benchmarks/README.md)
    gc_freeze: bool = True

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSection:
        if bool(self.tls_cert) != bool(self.tls_key):
            missing = "tls_key" if self.tls_cert else "tls_cert"
            raise ValueError(f"server.tls_cert and server.tls_key go together ({missing} is empty)")
        for key in ("tls_cert", "tls_key"):
            path = getattr(self, key)
            if path and not Path(path).is_file():
                raise ValueError(f"server.{key}: no such file: {path}")
        return self


class RoomsSection(Section):
    max_participants: int = Field(default=50, ge=1)
    max_rooms: int = Field(default=1000, ge=1)
    max_tracks_per_participant: int = Field(default=8, ge=1)
    max_subscriptions_per_participant: int = Field(default=256, ge=1)
    resume_grace_s: float = Field(default=15.0, ge=0)


class SignalingSection(Section):
    max_message_bytes: int = Field(default=256 * 1024, ge=1024)
    messages_per_s: float = Field(default=50.0, gt=0)
    message_burst: int = Field(default=100, ge=1)
    max_rate_limited: int = Field(default=50, ge=1)


class NetworkSection(Section):
    include_loopback_candidates: bool = True
    media_addresses: list[str] = Field(default_factory=list)
    announced_ips: list[str] = Field(default_factory=list)
    udp_port_min: int = Field(default=0, ge=0, le=65535)
    udp_port_max: int = Field(default=0, ge=0, le=65535)

    @field_validator("media_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            ipaddress.ip_address(address)
        return value

    @field_validator("announced_ips")
    @classmethod
    def _announced(cls, value: list[str]) -> list[str]:
        for entry in value:
            for address in entry.split("/"):
                ipaddress.ip_address(address)
        return value

    @model_validator(mode="after")
    def _range(self) -> NetworkSection:
        if (self.udp_port_min == 0) != (self.udp_port_max == 0) or self.udp_port_min > self.udp_port_max:
            raise ValueError("network.udp_port_min/udp_port_max: give both, with min <= max (or both 0)")
        return self


class IceSection(Section):
    servers: list[IceServer] = Field(default_factory=list)


class TurnSection(Section):
    urls: list[str] = Field(default_factory=list)
    secret: str = ""
    credential_ttl_s: int = Field(default=86400, ge=1)

    @model_validator(mode="after")
    def _secret(self) -> TurnSection:
        if self.urls and not self.secret:
            raise ValueError("turn.secret is required when turn.urls is set")
        return self


class AuthSection(Section):
    dev_mode: bool = True
    jwt_secret: str = ""
    default_token_ttl_s: int = Field(default=3600, ge=1)

    @model_validator(mode="after")
    def _secret(self) -> AuthSection:
        if not self.dev_mode and not self.jwt_secret:
            raise ValueError("auth.jwt_secret is required when auth.dev_mode is false")
        return self


class AdminSection(Section):
    api_key: str = ""


class WebhooksSection(Section):
    urls: list[str] = Field(default_factory=list)
    secret: str = ""
    timeout_s: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=20)
    initial_backoff_s: float = Field(default=0.5, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    queue_size: int = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _secret(self) -> WebhooksSection:
        if self.urls and not self.secret:
            raise ValueError("webhooks.secret is required when webhooks.urls is set")
        return self


class Config(BaseSettings):
    """Sections mirror config/reference.toml. Attribute shortcuts below keep the flat names the
    rest of the code reads (`config.max_participants`, ...)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER,
                                      extra="forbid", validate_assignment=True)

    server: ServerSection = Field(default_factory=ServerSection)
    rooms: RoomsSection = Field(default_factory=RoomsSection)
    signaling: SignalingSection = Field(default_factory=SignalingSection)
    network: NetworkSection = Field(default_factory=NetworkSection)
    ice: IceSection = Field(default_factory=IceSection)
    turn: TurnSection = Field(default_factory=TurnSection)
    auth: AuthSection = Field(default_factory=AuthSection)
    admin: AdminSection = Field(default_factory=AdminSection)
    webhooks: WebhooksSection = Field(default_factory=WebhooksSection)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # flags (init) > environment > file; pydantic-settings deep-merges the sections
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    # -- the flat names existing code uses ----------------------------------------------------

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def workers(self) -> int:
        return self.server.workers

    @property
    def log_level(self) -> str:
        return self.server.log_level

    @property
    def shutdown_timeout_s(self) -> float:
        return self.server.shutdown_timeout_s

    @property
    def debug_endpoints(self) -> bool:
        return self.server.debug_endpoints

    @property
    def max_participants(self) -> int:
        return self.rooms.max_participants

    @property
    def max_message_bytes(self) -> int:
        return self.signaling.max_message_bytes

    @property
    def include_loopback_candidates(self) -> bool:
        return self.network.include_loopback_candidates

    @property
    def ice_servers(self) -> list[IceServer]:
        return self.ice.servers

    def rtc_ice_servers(self) -> list[RTCIceServer]:
        """The servers the server's own peer connections gather with: the static `ice.servers`
        only (never TURN with ephemeral credentials). Explicit, so aiortc never falls back to its
        default public STUN server."""
        return [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                for s in self.ice.servers]

    def client_ice_servers(self) -> list[dict[str, Any]]:
        """The static `ice.servers` as `joined.ice_servers` entries (TURN credentials minted per
        participant are added by sfu.ice_servers)."""
        out: list[dict[str, Any]] = []
        for server in self.ice.servers:
            entry: dict[str, Any] = {"urls": server.urls}
            if server.username is not None:
                entry["username"] = server.username
            if server.credential is not None:
                entry["credential"] = server.credential
            out.append(entry)
        return out


@contextmanager
def _reading(path: Path | None) -> Iterator[None]:
    token = _config_file.set(path)
    try:
        yield
    finally:
        _config_file.reset(token)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """File < environment < overrides (the flags, as nested sections). Raises ConfigError naming
    the key (and the environment variable, when one set it)."""
    file_path = Path(path) if path else None
    if file_path is not None:
        if not file_path.is_file():
            raise ConfigError(f"configuration file not found: {file_path}")
        try:
            tomllib.loads(file_path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file_path}: not valid TOML: {exc}") from None
    try:
        with _reading(file_path):
            return Config(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(describe(exc, file_path)) from None


def describe(exc: ValidationError, file_path: Path | None = None) -> str:
    lines = [f"invalid configuration{f' ({file_path})' if file_path else ''}:"]
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"] if not isinstance(part, int)) or "(root)"
        env = ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(p) for p in err["loc"][:2]).upper()
        source = f" (set by {env})" if env in os.environ else ""
        text = str(err["msg"]).removeprefix("Value error, ")
        got = f" (got {err['input']!r})" if err["type"] != "value_error" and "input" in err else ""
        lines.append(f"  {key}{source}: {text}{got}")
    return "\n".join(lines)
