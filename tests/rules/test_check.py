"""``fraud-rules check``: rules and thresholds compiled offline, with exit codes for CI."""

from __future__ import annotations

from pathlib import Path

import yaml
from fraud_operator.validation import parse_spec, rules_version_of
from fraud_rules.cli import app
from fraud_scorer.config import ScorerSettings
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _check(*args: str) -> tuple[int, list[str]]:
    result = runner.invoke(app, ["check", *args])
    return result.exit_code, result.output.splitlines()


def test_the_shipped_manifests_pass_with_the_version_the_scorers_will_report(
    tmp_path: Path,
) -> None:
    code, lines = _check(*(str(p) for p in sorted((ROOT / "examples").glob("*.yaml"))))
    assert code == 0, lines
    minimal = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    spec = parse_spec(minimal["spec"])
    assert not hasattr(spec, "reason")
    version = rules_version_of(spec)  # type: ignore[arg-type]
    assert f"minimal.yaml: FraudDetector default/minimal: 1 rule compiles (rules {version})" in (
        " ".join(lines)
    )
    assert any("kind-model-server.yaml: skipped" in line for line in lines)  # no rules in it


def test_every_problem_is_named_with_its_rule_and_column_and_the_exit_code_is_1(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "rules": [
                    {"name": "typo", "action": "block",
                     "expression": "tx.amount > 0.0 && features.tx_count_1hh > 3"},
                    {"name": "broken", "expression": "tx.amount >"},
                    {"name": "typo", "expression": "tx.amount > 1.0"},
                    {"name": "mixed", "expression": "tx.amount + 1 > 2.0"},
                ],
                "decision": {"review_at": 0.9, "block_at": 0.5},
            }
        )
    )  # fmt: skip
    code, lines = _check(str(bad))
    assert code == 1
    found = [line.removeprefix(f"{bad}: rules file: ") for line in lines]
    assert found[0] == "decision: review_at (0.9) must not be above block_at (0.5)"
    assert found[1] == "rule 'typo': the name is used twice"
    assert found[2].startswith("rule 'typo', column 20: unknown feature 'tx_count_1hh'")
    assert found[3] == "rule 'broken', column 11: syntax error at column 11"
    assert found[4].startswith("rule 'mixed', column 1: no operator '+' for (double, int)")


def test_rules_compile_against_the_features_a_file_declares_or_is_given(tmp_path: Path) -> None:
    """A rule on a declared feature fails against v1, passes against the set that declares it:
    a scorer config's own ``features``, or ``--features`` for a bare rules list."""
    rule = {"name": "card-testing", "expression": "features.merchants_1h >= 3"}
    bare = tmp_path / "rules.yaml"
    bare.write_text(yaml.safe_dump([rule]))
    code, lines = _check(str(bare))
    assert code == 1 and "unknown feature 'merchants_1h'" in lines[0]
    velocity = ROOT / "examples" / "features" / "velocity.yaml"
    assert _check(str(bare), "--features", str(velocity))[0] == 0

    config = {
        "kafka": {"bootstrap_servers": "kafka:9092"},
        "rules": [rule],
        "features": {"definitions": yaml.safe_load(velocity.read_text())},
    }
    path = tmp_path / "scorer.yaml"
    path.write_text(yaml.safe_dump(config))
    code, lines = _check(str(path))
    assert code == 0 and lines[0].startswith(f"{path}: scorer config: 1 rule compiles")
    ScorerSettings.model_validate(config)  # what passes here is a config the scorer loads


def test_a_fraud_detector_is_checked_as_the_operator_checks_it(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all((ROOT / "examples" / "minimal.yaml").read_text()))
    detector = next(d for d in docs if d.get("kind") == "FraudDetector")
    detector["spec"]["rules"] = [{"name": "nope", "expression": "features.nope > 1.0"}]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
    path = tmp_path / "fd.yaml"
    path.write_text(yaml.safe_dump_all([secret, detector]))
    code, lines = _check(str(path), "--format", "json")
    assert code == 1
    import json

    (result,) = json.loads("\n".join(lines))
    assert result["document"] == "FraudDetector default/minimal" and not result["ok"]
    assert result["findings"][0]["where"] == "rule 'nope', column 1"


def test_unusable_input_exits_2(tmp_path: Path) -> None:
    assert _check(str(tmp_path / "missing.yaml"))[0] == 2
    empty = tmp_path / "empty.yaml"
    empty.write_text("apiVersion: v1\nkind: ConfigMap\n")
    code, lines = _check(str(empty))
    assert code == 2 and lines[-1].startswith("error: no rules to check")


def test_a_yaml_bomb_or_an_oversized_file_is_refused_before_it_is_built(tmp_path: Path) -> None:
    """Rules files come from pull requests: nine levels of anchors, each naming the previous one
    ten times, would expand to a billion nodes. Refused from the composed graph (exit 2), as is
    a file over the size cap; an ordinary anchor still works."""
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join(['*a' + str(i - 1)] * 10)}]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join([*lines, "rules: *a9"]) + "\n")
    code, lines_out = _check(str(bomb))
    assert code == 2 and "once its aliases are expanded" in " ".join(lines_out)

    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (5 << 20) + "\nrules: []\n")
    code, lines_out = _check(str(big))
    assert code == 2 and "files up to" in " ".join(lines_out)

    anchored = tmp_path / "anchored.yaml"
    anchored.write_text("base: &big {name: big, expression: 'tx.amount > 1000.0'}\nrules: [*big]\n")
    code, lines_out = _check(str(anchored))
    assert code == 0, lines_out
