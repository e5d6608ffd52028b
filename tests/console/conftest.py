"""The console against a real PostgreSQL filled by the real case-store code from a real
scorer's decisions: a fresh database per module, migrated by its owner, read by a login in
role fraud_console, as docs/console.md tells a DBA to set it up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fraud_console.auth import hash_password
from fraud_console.settings import ConsoleSettings
from fraud_console.store import configure
from fraud_scorer.config import DecisionSettings, RuleSpec
from fraud_scorer.features import FeatureEngine
from fraud_scorer.model import load_model
from fraud_scorer.pipeline import BatchResult, BatchScorer
from fraud_scorer.rules import compile_rules
from fraud_sinks.case_store import CaseStore, migrate
from fraud_sinks.messages import as_dict, decode_decision
from fraud_training.data import to_payloads
from fraud_training.synth import SynthConfig, generate
from psycopg_pool import ConnectionPool

from tests.records import Msg
from tests.servers import case_store_logins

PASSWORDS = {"alice": "alice-pass-1", "victor": "victor-pass-1", "root": "root-pass-1"}
ROLES = {"alice": "analyst", "victor": "viewer", "root": "admin"}
_HASHES = {name: hash_password(pw) for name, pw in PASSWORDS.items()}


def scored(model_dir: Path, n: int = 3000) -> list[dict[str, Any]]:
    """Decisions of a real scorer (rules, model, reason codes) as the case-store sink reads
    them from the decisions topic (alerts: with their transaction)."""
    result = scorer_output(model_dir, n)
    alerts = dict(result.alerts)
    rows = []
    for key, value in result.decisions:
        d = decode_decision(alerts.get(key, value))
        rows.append(as_dict(d, d.transaction_text()))
    return rows


def scorer_output(model_dir: Path, n: int = 3000) -> BatchResult:
    """A real scorer pipeline's decisions and alerts (key, value) on ``n`` transactions."""
    frame = generate(SynthConfig(users=400, days=2.0, seed=17)).iloc[:n]
    scorer = BatchScorer(
        model=load_model(model_dir),
        ruleset=compile_rules(
            [RuleSpec(name="big", expression="tx.amount > 400.0", action="review"),
             RuleSpec(name="burst", expression="features.tx_count_1h >= 3", action="block")],
            DecisionSettings(review_at=0.5, block_at=0.95),
        ),
        engine=FeatureEngine(), detector="retail", track="stable", max_message_bytes=1 << 16,
    )  # fmt: skip
    return scorer.process([Msg(p) for p in to_payloads(frame)])


@pytest.fixture(scope="module")
def database(postgres_url: str, model_dir: Path) -> dict[str, str]:
    """A migrated database holding a real scorer's decisions; DSN per login."""
    base = postgres_url.rsplit("/", 1)[0]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS console_test")
        admin.execute("CREATE DATABASE console_test")
    owner = base + "/console_test"
    with psycopg.connect(owner, autocommit=True) as conn:
        migrate(conn)
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'console'").fetchone():
            conn.execute("CREATE ROLE console LOGIN IN ROLE fraud_console")
    logins = case_store_logins(owner)
    with psycopg.connect(logins["sink"], autocommit=True) as sink:
        CaseStore(sink).write(scored(model_dir))
    return {
        "owner": owner,
        "console": f"{base.replace('fraud@', 'console@')}/console_test",
        **logins,
    }


@pytest.fixture(scope="module")
def pool(database: dict[str, str]) -> Iterator[ConnectionPool[Any]]:
    with ConnectionPool(
        database["console"],
        min_size=1,
        max_size=4,
        kwargs={"autocommit": True},
        configure=configure,
    ) as p:
        yield p


def settings(database: dict[str, str], **extra: Any) -> ConsoleSettings:
    users = {n: {"password": h, "role": ROLES[n]} for n, h in _HASHES.items()}
    return ConsoleSettings(
        dsn=database["console"],
        session_secret="s" * 40,
        secure_cookies=False,
        auth={"mode": "builtin", "users": users},
        **extra,
    )
