from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fraud_scorer.config import SliceSettings, load_settings, read_reloadable
from pydantic import ValidationError


def write(tmp_path: Path, doc: dict[str, object]) -> Path:
    path = tmp_path / "scorer.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_yaml_then_environment_with_secrets_kept_out_of_dumps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        {
            "detector": "retail-eu",
            "kafka": {
                "bootstrap_servers": "k:9093",
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "fraud",
            },
            "rules": [{"name": "high-amount", "expression": "tx.amount > 400.0"}],
        },
    )
    monkeypatch.setenv("FRAUD_KAFKA__SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("FRAUD_BATCH__MAX_MESSAGES", "500")
    s = load_settings(path)
    assert s.detector == "retail-eu" and s.batch.max_messages == 500
    assert s.kafka.client_config()["sasl.password"] == "s3cret"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.redacted())
    assert s.rules[0].action == "review"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"decision": {"review_at": 0.9, "block_at": 0.5}}, "must not be above block_at"),
        ({"kafka": {"security_protocol": "SASL_SSL"}}, "needs sasl_mechanism"),
        (
            {
                "kafka": {
                    "security_protocol": "SASL_PLAINTEXT",
                    "sasl_mechanism": "PLAIN",
                    "sasl_username": "u",
                    "sasl_password": "p",
                }
            },
            "PLAIN sends the password as is",
        ),
        (
            {"rules": [{"name": "a", "expression": "true"}, {"name": "a", "expression": "true"}]},
            "used twice",
        ),
        ({"rules": [{"name": "Bad Name", "expression": "true"}]}, "pattern"),
        ({"rules": [{"name": "a", "expression": "true", "action": "alert"}]}, "review"),
        ({"tarck": "canary"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_configuration_is_explained(
    tmp_path: Path, doc: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        load_settings(write(tmp_path, doc))


def test_rules_file_reads_only_the_reloadable_part(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "detector": "x",
            "rules": [{"name": "a", "expression": "true"}],
            "decision": {"review_at": 0.5},
            "slice": {"start": 10, "end": 100},
        },
    )
    rules, decision, slice_ = read_reloadable(path)
    assert [r.name for r in rules] == ["a"] and decision.review_at == 0.5
    assert slice_ == SliceSettings(start=10, end=100)
    assert slice_.contains(10) and not slice_.contains(9)
    with pytest.raises(ValueError, match=r"slice.start \(60\) is above slice.end \(50\)"):
        SliceSettings(start=60, end=50)
