"""The sink's configuration: secrets from the environment only, clear errors when missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fraud_sinks.config import SinkSettings, load_sink_settings
from pydantic import ValidationError


def test_a_webhook_sink_without_a_url_says_which_variable_to_set() -> None:
    with pytest.raises(ValidationError, match="FRAUD_WEBHOOK__URL"):
        SinkSettings(sink="webhook")


def test_a_case_store_sink_without_a_dsn_says_which_variable_to_set() -> None:
    with pytest.raises(ValidationError, match="FRAUD_POSTGRES__DSN"):
        SinkSettings(sink="postgres")


def test_only_http_urls_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_WEBHOOK__URL", "file:///etc/passwd")
    with pytest.raises(ValidationError, match=r"http\(s\)://"):
        SinkSettings(sink="webhook")


def test_secrets_come_from_the_environment_and_are_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sink.yaml"
    path.write_text("sink: postgres\ntopics: {labels: verdicts}\n")
    monkeypatch.setenv("FRAUD_POSTGRES__DSN", "postgresql://fraud:hunter2@db/cases")
    settings = load_sink_settings(path)
    assert settings.input_topics() == ["scored-transactions", "fraud-alerts", "verdicts"]
    assert "hunter2" not in str(settings.redacted()) and "hunter2" not in repr(settings)
    assert settings.postgres.dsn is not None
    assert settings.postgres.dsn.get_secret_value().endswith("@db/cases")
