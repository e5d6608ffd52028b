"""Rules hot reload on its own: a changed file is compiled, a broken one is rejected (the
running rules stay), an unchanged one is not read again."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from fraud_scorer.config import SliceSettings
from fraud_scorer.rules_reload import Rejected, Reloaded, RulesReloader

RULE = {"name": "big", "expression": "tx.amount > 100.0", "action": "review"}


def write(path: Path, **config: object) -> None:
    path.write_text(yaml.safe_dump(config))
    time.sleep(0.01)  # a distinct mtime even on coarse file systems


def test_changed_file_is_compiled_and_then_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "scorer.yaml"
    write(path, rules=[])
    reloader = RulesReloader(path, interval_s=0.0)
    assert reloader.check() is None  # nothing changed since start
    write(path, rules=[RULE], slice={"start": 20, "end": 100})
    outcome = reloader.check()
    assert isinstance(outcome, Reloaded)
    assert [r.name for r in outcome.ruleset.rules] == ["big"]
    assert outcome.slice == SliceSettings(start=20, end=100)
    assert reloader.check() is None


def test_a_rule_that_does_not_compile_is_rejected_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "scorer.yaml"
    write(path, rules=[RULE])
    reloader = RulesReloader(path, interval_s=0.0)
    write(path, rules=[{"name": "bad", "expression": "tx.nope > 1"}])
    outcome = reloader.check()
    assert isinstance(outcome, Rejected)
    assert "nope" in outcome.error


def test_the_file_is_looked_at_only_every_interval(tmp_path: Path) -> None:
    path = tmp_path / "scorer.yaml"
    write(path, rules=[])
    reloader = RulesReloader(path, interval_s=3600)
    write(path, rules=[RULE])
    assert reloader.check() is None  # not due for an hour


def test_a_pathological_or_unreadable_file_is_rejected_never_raised(tmp_path: Path) -> None:
    path = tmp_path / "scorer.yaml"
    write(path, rules=[RULE])
    reloader = RulesReloader(path, interval_s=0.0)
    write(path, rules=[{"name": "deep", "expression": "(" * 300 + "true" + ")" * 300}])
    outcome = reloader.check()
    assert isinstance(outcome, Rejected) and "nested too deeply" in outcome.error
    path.write_text("rules: [unclosed\n")
    time.sleep(0.01)
    outcome = reloader.check()
    assert isinstance(outcome, Rejected) and outcome.error.startswith("ParserError")
