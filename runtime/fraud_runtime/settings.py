"""Settings every Kafka process shares: the file + environment loader, Kafka client settings and
the metrics endpoint.

A process's settings are one frozen pydantic-settings model read from a YAML file (the
operator's ConfigMap) with the environment winning over it: ``FRAUD_`` prefix, ``__`` between
levels, e.g. ``FRAUD_KAFKA__SASL_PASSWORD``. That is how a Secret injected as an environment
variable completes a ConfigMap-rendered file. Credentials are ``SecretStr`` and never appear in
logs or ``repr``.

This module imports nothing heavy: the operator renders these models into ConfigMaps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class Frozen(BaseModel):
    """A settings section: immutable, and a typo in the file is an error, not a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")


_SECRET_KEY = re.compile(r"password|secret|token|jaas|credential|\.key(\.|$)", re.IGNORECASE)


class KafkaSettings(Frozen):
    bootstrap_servers: str = "localhost:9092"
    group_id: str = "fraud-scorer"
    client_id: str = "fraud-scorer"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = Field(
        default=None,
        description="a PEM file (or OpenSSL hashed directory) of the CAs the brokers chain to; "
        "none: the system's public CAs",
    )
    ssl_ca_files: list[str] = Field(
        default_factory=list,
        description="several CA PEM files, read at start into one bundle (ssl.ca.pem)",
    )
    ssl_certificate_location: str | None = Field(
        default=None, description="this client's certificate (PEM), for mutual TLS"
    )
    ssl_key_location: str | None = Field(
        default=None, description="this client's private key (PEM), for mutual TLS"
    )
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    start_from_group: str | None = Field(
        default=None,
        description="where a partition this group has never committed starts: this group's "
        "committed offset (a new canary or shadow track starts where stable is, instead of "
        "deciding the whole retained log again); auto_offset_reset when it has none either",
    )
    extra: dict[str, str | int | bool] = Field(
        default_factory=dict, description="librdkafka properties passed through verbatim"
    )

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, sasl_username "
                "and sasl_password (set FRAUD_KAFKA__SASL_PASSWORD from a Secret)"
            )
        if self.ssl_ca_location and self.ssl_ca_files:
            raise ValueError("ssl_ca_location and ssl_ca_files are alternatives: set one")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("ssl_certificate_location and ssl_key_location go together")
        if self.security_protocol == "SASL_PLAINTEXT" and self.sasl_mechanism == "PLAIN":
            raise ValueError(
                "sasl_mechanism PLAIN sends the password as is: use security_protocol SASL_SSL "
                "(or a SCRAM mechanism, which never sends it)"
            )
        return self

    @field_serializer("extra", when_used="json")
    def _mask_secret_properties(self, extra: dict[str, str | int | bool]) -> dict[str, Any]:
        """Pass-through properties can hold credentials (``sasl.password``,
        ``ssl.key.password``, ``sasl.oauthbearer.client.secret``): masked when the settings are
        logged."""
        return {k: "**********" if _SECRET_KEY.search(k) else v for k, v in extra.items()}

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings common to every client this process opens."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else ""
            )
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        if self.ssl_ca_files:
            # One bundle: OpenSSL reads a directory only when its files are named by hash.
            conf["ssl.ca.pem"] = "\n".join(Path(f).read_text().strip() for f in self.ssl_ca_files)
        if self.ssl_certificate_location and self.ssl_key_location:
            conf["ssl.certificate.location"] = self.ssl_certificate_location
            conf["ssl.key.location"] = self.ssl_key_location
        conf.update(self.extra)
        return conf


class MetricsSettings(Frozen):
    host: str = "0.0.0.0"  # noqa: S104 - a pod's metrics port must be reachable by Prometheus
    port: int = Field(default=9102, ge=0, le=65535)


class EnvFirstSettings(BaseSettings):
    """Settings whose environment (``FRAUD_`` prefix, ``__`` between levels) wins over the
    file, passed as init values. Every process's settings model derives from this one."""

    model_config = SettingsConfigDict(
        env_prefix="FRAUD_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    def redacted(self) -> dict[str, Any]:
        """The effective configuration, safe to log (secrets masked by pydantic)."""
        return json.loads(self.model_dump_json())  # type: ignore[no-any-return]


S = TypeVar("S", bound=EnvFirstSettings)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The YAML file's top-level mapping (empty for an empty file)."""
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level")
    return data


def load_settings_file(cls: type[S], path: Path | None, **overrides: Any) -> S:
    """``cls`` from the YAML file at ``path`` (if any) updated by ``overrides``; the
    environment still wins over both."""
    data = read_yaml_mapping(path) if path is not None else {}
    data.update(overrides)
    return cls(**data)
