"""A sink process's configuration (``fraud-sink --config sink.yaml``), rendered by the operator
as a ConfigMap. Like the scorer's, the environment wins over the file: the webhook URL
(``FRAUD_WEBHOOK__URL``), the case store's DSNs (``FRAUD_POSTGRES__DSN`` for the runtime,
``FRAUD_POSTGRES__MIGRATION_DSN`` for the schema owner) and the Kafka password reach the pod
only from Secrets, and all are ``SecretStr`` (never logged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fraud_runtime.settings import (
    EnvFirstSettings,
    Frozen,
    KafkaSettings,
    MetricsSettings,
    load_settings_file,
)
from pydantic import Field, SecretStr, model_validator

from fraud_sinks.webhook import WebhookSettings

SinkKind = Literal["webhook", "postgres"]


class SinkTopics(Frozen):
    decisions: str = "scored-transactions"
    alerts: str = "fraud-alerts"
    labels: str | None = Field(default=None, description="analysts' labels (case store only)")
    dead_letter: str = Field(
        default="transactions-dlq",
        description="where alerts a webhook would not take, and unreadable messages, go",
    )


class WebhookConfig(Frozen):
    url: SecretStr | None = None
    style: Literal["slack", "json"] = "slack"
    min_action: Literal["review", "block"] = "review"
    timeout_s: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=20)
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    failure_threshold: int = Field(default=5, ge=1)
    open_seconds: float = Field(default=60.0, gt=0)
    rate_per_s: float = Field(default=5.0, gt=0)
    burst: int = Field(default=20, ge=1)

    def settings(self) -> WebhookSettings:
        if self.url is None:
            raise ValueError("the webhook sink needs a URL (set FRAUD_WEBHOOK__URL from a Secret)")
        fields = self.model_dump(exclude={"url"})
        return WebhookSettings(url=self.url.get_secret_value(), **fields)


class PostgresConfig(Frozen):
    dsn: SecretStr | None = Field(
        default=None, description="the runtime login (a member of fraud_case_writer)"
    )
    migration_dsn: SecretStr | None = Field(
        default=None,
        description="the schema owner's login: when set, the sink applies the project's "
        "migrations with it at start, then drops that connection; when not, it waits until "
        "someone has (`fraud-cases migrate`)",
    )


class SinkBatch(Frozen):
    max_messages: int = Field(default=1000, ge=1, le=100_000)
    poll_timeout_s: float = Field(default=0.2, gt=0, le=5)
    retry_max_s: float = Field(default=30.0, gt=0, description="cap of the store's retry backoff")


class SinkSettings(EnvFirstSettings):
    detector: str = "default"
    sink: SinkKind = "webhook"
    kafka: KafkaSettings = KafkaSettings(group_id="fraud-sink", client_id="fraud-sink")
    topics: SinkTopics = SinkTopics()
    webhook: WebhookConfig = WebhookConfig()
    postgres: PostgresConfig = PostgresConfig()
    batch: SinkBatch = SinkBatch()
    metrics: MetricsSettings = MetricsSettings(port=9103)

    @model_validator(mode="after")
    def _complete(self) -> SinkSettings:
        if self.sink == "webhook":
            self.webhook.settings()  # the URL is there and well-formed
        elif self.postgres.dsn is None:
            raise ValueError(
                "the postgres sink needs a DSN (set FRAUD_POSTGRES__DSN from a Secret)"
            )
        else:
            _check_dsn(self.postgres.dsn.get_secret_value(), "FRAUD_POSTGRES__DSN")
            if self.postgres.migration_dsn is not None:
                dsn = self.postgres.migration_dsn.get_secret_value()
                _check_dsn(dsn, "FRAUD_POSTGRES__MIGRATION_DSN")
        return self

    def input_topics(self) -> list[str]:
        """What this sink consumes: alerts for a webhook; decisions, alerts (they carry the
        transaction) and labels for the case store."""
        if self.sink == "webhook":
            return [self.topics.alerts]
        t = self.topics
        return [t.decisions, t.alerts, *([t.labels] if t.labels else [])]


def load_sink_settings(path: Path | None, **overrides: Any) -> SinkSettings:
    return load_settings_file(SinkSettings, path, **overrides)


def _check_dsn(dsn: str, variable: str) -> None:
    """A DSN libpq cannot parse is a configuration error (exit 2 at start), not an outage to
    retry. Its error would quote the DSN, password included: only the kind of problem is said."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(dsn)
    except ProgrammingError:
        raise ValueError(
            f"{variable} cannot be parsed (expected postgresql://user:password@host:port"
            "/database or key=value pairs)"
        ) from None
