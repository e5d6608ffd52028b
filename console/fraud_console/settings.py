"""The console's configuration (``fraud-console --config console.yaml``). The environment wins
over the file (``FRAUD_`` prefix, ``__`` between levels): the database DSN, the session secret,
the Kafka password and the built-in login's password hashes reach the pod only from Secrets,
and all are ``SecretStr`` (never logged)."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Literal

from fraud_runtime.settings import (
    EnvFirstSettings,
    Frozen,
    KafkaSettings,
    MetricsSettings,
    load_settings_file,
)
from pydantic import Field, SecretStr, model_validator

Role = Literal["viewer", "analyst", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "analyst", "admin")


class BuiltinUser(Frozen):
    password: SecretStr = Field(description="`fraud-console hash-password` output (scrypt)")
    role: Role = "analyst"


class ProxyAuth(Frozen):
    """Identity from an OIDC proxy (oauth2-proxy, Pomerium...) in front of the console, trusted
    only from ``trusted_proxies``: a request from anywhere else with these headers is refused."""

    user_header: str = "X-Forwarded-Email"
    groups_header: str = "X-Forwarded-Groups"
    trusted_proxies: list[IPv4Network | IPv6Network] = Field(min_length=1)
    # group -> role; a user in several groups gets the highest role. No matching group: refused.
    groups: dict[str, Role] = Field(min_length=1)


class AuthSettings(Frozen):
    mode: Literal["builtin", "proxy"] = "builtin"
    users: dict[str, BuiltinUser] = Field(default_factory=dict)
    proxy: ProxyAuth | None = None

    @model_validator(mode="after")
    def _complete(self) -> AuthSettings:
        if self.mode == "proxy" and self.proxy is None:
            raise ValueError("auth.mode proxy needs auth.proxy (headers, trusted proxies, groups)")
        if self.mode == "builtin" and not self.users:
            raise ValueError("auth.mode builtin needs auth.users (fraud-console hash-password)")
        return self


class ConsoleSettings(EnvFirstSettings):
    dsn: SecretStr = Field(description="a login in role fraud_console (migration 006)")
    session_secret: SecretStr = Field(min_length=32, description="signs the session cookie")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    secure_cookies: bool = Field(
        default=True, description="cookies only over https (off for the local demo)"
    )
    auth: AuthSettings
    kafka: KafkaSettings | None = None
    labels_topic: str | None = Field(
        default=None, description="where labels are published (training, label features)"
    )
    metrics: MetricsSettings = Field(
        default=MetricsSettings(host="127.0.0.1", port=0),
        description="/metrics (and the probes) on their own port, apart from the pages: "
        "in a cluster the pages are reached through a proxy, the metrics by Prometheus only",
    )
    page_size: int = Field(default=50, ge=5, le=500)
    pool_size: int = Field(default=4, ge=1, le=64)

    @model_validator(mode="after")
    def _publishing(self) -> ConsoleSettings:
        if (self.kafka is None) != (self.labels_topic is None):
            raise ValueError("kafka and labels_topic go together: labels are published to it")
        return self


def load_console_settings(path: Path | None, **overrides: object) -> ConsoleSettings:
    return load_settings_file(ConsoleSettings, path, **overrides)
