"""What each sink does with a batch: the webhook posts alerts, the case store writes decisions,
alerts and labels. A handler returns the messages it gives up on (each with a reason) and raises
:class:`StoreUnavailable` when its destination is down, so the service retries the whole batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import structlog
from confluent_kafka import Message
from fraud_runtime.logs import first_line
from fraud_runtime.trace import trace_context

from fraud_sinks.config import SinkSettings
from fraud_sinks.messages import Label, as_dict, decode_decision, decode_label
from fraud_sinks.metrics import SinkMetrics
from fraud_sinks.webhook import WebhookSink

log = structlog.get_logger("fraud_sink")


class StoreUnavailable(RuntimeError):
    """The destination is down; the whole batch is retried later."""


@dataclass(frozen=True)
class DeadLetter:
    msg: Message
    reason: str
    detail: str


class Handler(Protocol):
    def handle(self, records: list[Message]) -> list[DeadLetter]: ...

    def ready(self) -> tuple[bool, str]: ...

    def prepare(self) -> None:
        """Between batches, in the loop's thread: get ready for the next one (quick)."""

    def close(self) -> None: ...


class WebhookHandler:
    """Alerts to a Slack-style or JSON webhook, via :class:`WebhookSink`."""

    def __init__(
        self,
        settings: SinkSettings,
        metrics: SinkMetrics,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.metrics = metrics
        self._why: str | None = None
        self.sink = WebhookSink(
            settings.webhook.settings(), sleep=sleep, on_dead_letter=self._note_why
        )

    def _note_why(self, _alert: dict[str, Any], why: str) -> None:
        self._why = why

    def handle(self, records: list[Message]) -> list[DeadLetter]:
        dead: list[DeadLetter] = []
        m, sink = self.metrics, self.sink
        for msg in records:
            try:
                d = decode_decision(msg.value())
            except ValueError as exc:
                dead.append(DeadLetter(msg, "undecodable", str(exc)))
                m.messages(**m.base(), outcome="dead_letter").inc()
                continue
            tx = msgspec.json.decode(d.transaction)
            retried, started = sink.retried, time.perf_counter()
            outcome = sink.send(as_dict(d, tx), trace_context(msg.headers()))
            m.retries.inc(sink.retried - retried)
            m.messages(**m.base(), outcome=outcome).inc()
            if outcome == "delivered":
                m.delivery.observe(time.perf_counter() - started)
                m.end_to_end.observe(max(0.0, time.time() - d.scored_at))
            elif outcome == "dead_letter":
                m.failures.inc()
                dead.append(DeadLetter(msg, "webhook_undeliverable", self._why or "unknown"))
            m.circuit_open.set(1 if sink.circuit_open else 0)
        return dead

    def ready(self) -> tuple[bool, str]:
        return True, "circuit open" if self.sink.circuit_open else "delivering"

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        return None


class CaseStoreHandler:
    """Decisions, alerts and labels into the PostgreSQL case store."""

    def __init__(self, settings: SinkSettings, metrics: SinkMetrics) -> None:
        assert settings.postgres.dsn is not None  # checked by SinkSettings
        self._dsn = settings.postgres.dsn.get_secret_value()
        migration = settings.postgres.migration_dsn
        self._migration_dsn = migration.get_secret_value() if migration else None
        self._secrets = _dsn_secrets(self._dsn) + (
            _dsn_secrets(self._migration_dsn) if self._migration_dsn else []
        )
        self._why = "case store down"
        self._next_try = 0.0
        self._labels_topic = settings.topics.labels
        self.metrics = metrics
        self._conn: Any = None
        self._store: Any = None

    def _connected(self) -> Any:
        """The store, connected with the runtime login once the schema is current: migrated
        first with the owner's login when one is configured, else waited for (not ready, and
        retried like an outage: never a crash loop)."""
        import psycopg

        from fraud_sinks.case_store import CaseStore, migrate, owns_the_schema, pending_migrations

        if self._store is not None:
            return self._store
        try:
            if self._migration_dsn is not None:
                with psycopg.connect(
                    self._migration_dsn, autocommit=True, connect_timeout=10
                ) as owner:
                    if applied := migrate(owner):
                        log.info("case store migrated", applied=applied)
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            self._why = "case store down"
            raise StoreUnavailable(self._scrub(first_line(exc))) from exc
        except psycopg.Error as exc:  # e.g. the owner's login may not create the roles
            self._why = "case store migration failed"
            raise StoreUnavailable(f"migration failed: {self._scrub(first_line(exc))}") from exc
        missing = pending_migrations(conn)
        if missing:
            conn.close()
            self._why = "case store schema not migrated"
            raise StoreUnavailable(
                f"the case store's schema lacks {', '.join(missing)}: run `fraud-cases migrate` "
                "with the schema owner's DSN, or give the sink FRAUD_POSTGRES__MIGRATION_DSN"
            )
        if owns_the_schema(conn):
            log.warning(
                "the case-store sink's login owns the schema: it could alter the audit trail; "
                "give it a login in role fraud_case_writer (docs/sinks.md)"
            )
        self._conn, self._store = conn, CaseStore(conn)
        return self._store

    def prepare(self) -> None:
        """Connect while idle (every 15 s until it works), so that a sink with no traffic yet
        is Ready, and one whose schema is missing says so before the first message."""
        if self._store is not None or time.monotonic() < self._next_try:
            return
        self._next_try = time.monotonic() + 15.0
        try:
            self._connected()
        except StoreUnavailable as exc:
            log.info("case store not available yet", reason=str(exc))

    def handle(self, records: list[Message]) -> list[DeadLetter]:
        dead: list[DeadLetter] = []
        decisions: list[tuple[Message, dict[str, Any]]] = []
        labels: list[tuple[Message, Label]] = []
        for msg in records:
            try:
                if msg.topic() == self._labels_topic:
                    labels.append((msg, decode_label(msg.value())))
                else:
                    d = decode_decision(msg.value())
                    decisions.append((msg, as_dict(d, d.transaction_text())))
            except (ValueError, UnicodeDecodeError) as exc:
                dead.append(DeadLetter(msg, "undecodable", str(exc)))
        started = time.perf_counter()
        refused = self._write(decisions, labels)
        dead += refused
        m = self.metrics
        m.delivery.observe(time.perf_counter() - started)
        m.messages(**m.base(), outcome="written").inc(len(decisions) + len(labels) - len(refused))
        m.messages(**m.base(), outcome="dead_letter").inc(len(dead))
        now = time.time()
        for _, row in decisions:
            m.end_to_end.observe(max(0.0, now - row["scored_at"]))
        return dead

    def _write(
        self,
        decisions: list[tuple[Message, dict[str, Any]]],
        labels: list[tuple[Message, Label]],
    ) -> list[DeadLetter]:
        """One transaction for the batch; if PostgreSQL refuses its data, find the rows it
        refuses one by one (each is dead-lettered) and write the rest."""
        import psycopg

        # What one row can make PostgreSQL (or the conversion to its types) refuse: bad text
        # (a NUL), a CHECK (an unknown action), a timestamp out of range.
        refusals = (psycopg.DataError, psycopg.IntegrityError, OverflowError, ValueError)
        store = self._connected()
        try:
            try:
                with self._conn.transaction():
                    store.write([d for _, d in decisions])
                    self._count_labels(store.label([lab for _, lab in labels]))
                return []
            except refusals:
                refused = []
                for msg, item in [*decisions, *labels]:
                    try:
                        if isinstance(item, dict):
                            store.write([item])
                        else:
                            self._count_labels(store.label([item]))
                    except refusals as exc:
                        refused.append(DeadLetter(msg, "case_store_refused", first_line(exc)))
                return refused
        except psycopg.OperationalError as exc:
            self.close()
            raise StoreUnavailable(self._scrub(first_line(exc))) from exc

    def _scrub(self, text: str) -> str:
        """libpq's messages may quote the connection string: never its password."""
        for secret in self._secrets:
            text = text.replace(secret, "**********")
        return text

    def _count_labels(self, result: Any) -> None:
        m = self.metrics
        if result.applied:
            m.labels_recorded(**m.base(), result="applied").inc(result.applied)
        if result.pending:
            m.labels_recorded(**m.base(), result="pending").inc(result.pending)

    def ready(self) -> tuple[bool, str]:
        return (True, "case store connected") if self._store else (False, self._why)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._store = None


def _dsn_secrets(dsn: str) -> list[str]:
    from psycopg.conninfo import conninfo_to_dict

    password = conninfo_to_dict(dsn).get("password")
    return [dsn, str(password)] if password else [dsn]


def make_handler(
    settings: SinkSettings, metrics: SinkMetrics, sleep: Callable[[float], object] = time.sleep
) -> Handler:
    if settings.sink == "webhook":
        return WebhookHandler(settings, metrics, sleep)
    return CaseStoreHandler(settings, metrics)
