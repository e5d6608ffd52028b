"""``fraud-rules``: rules checked and backtested offline.

Exit codes, for CI and GitOps pipelines: 0 every rules document compiles (``check``) or the
backtest ran; 1 some rule or threshold is wrong (each finding on its own line: file, rule,
column, what to change); 2 the command could not do its work (a file missing or not YAML, no
rules in any file, data that cannot be read, a model of another feature set). A file without
rules (a Secret, a model server) is skipped with a note. ``backtest`` needs the training extra
(pandas, and training's point-in-time feature replay).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from fraud_scorer import feature_sets
from fraud_scorer.feature_defs import parse_feature_set
from fraud_scorer.feature_sets import FeatureSet
from fraud_scorer.rules import RuleSet
from pydantic import ValidationError

from fraud_rules.check import Checked, check_documents
from fraud_rules.files import FileProblem, read_documents

if TYPE_CHECKING:
    from fraud_rules.backtest import Report

app = typer.Typer(
    help="Check fraud rules offline with the scorer's own compiler.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion for bash, zsh, fish and PowerShell
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """Rules as a product: checked before they reach a cluster."""


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


# A decision is at most a message the scorer produced; a longer line is not one.
MAX_DECISION_BYTES = 4 << 20


def _lines(path: Path) -> Iterator[bytes]:
    """A JSON-lines file, line by line, each line bounded."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise _fail(f"{path}: {exc.strerror}") from exc
    with f:
        while line := f.readline(MAX_DECISION_BYTES + 1):
            if len(line) > MAX_DECISION_BYTES:
                raise _fail(f"{path}: a line longer than {MAX_DECISION_BYTES:,} bytes")
            yield line


def _features(path: Path | None) -> FeatureSet | None:
    if path is None:
        return None
    try:
        docs = read_documents(path)
        return feature_sets.declared(parse_feature_set(docs[0] if docs else None))
    except FileProblem as exc:
        raise _fail(str(exc)) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _fail(f"{path}: {where}: {first['msg']}") from exc


@app.command()
def check(
    files: Annotated[
        list[Path],
        typer.Argument(help="scorer configs, FraudDetector manifests or rules files (YAML)"),
    ],
    features: Annotated[
        Path | None,
        typer.Option(
            help="feature definitions to compile against when a file declares none (else v1)",
        ),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="text or json")] = "text",
) -> None:
    """Compile every rule and threshold of FILES as a scorer would; non-zero on any error."""
    if output not in ("text", "json"):
        raise _fail("--format is text or json")
    chosen = _features(features)
    results: dict[Path, list[Checked]] = {}
    for path in files:
        try:
            docs = read_documents(path)
        except FileProblem as exc:
            raise _fail(str(exc)) from exc
        checked = check_documents(docs, chosen)
        if checked:
            results[path] = checked
        else:
            typer.echo(f"{path}: skipped: no scorer config, FraudDetector or rules in it", err=True)
    if not results:
        raise _fail("no rules to check in " + ", ".join(str(p) for p in files))
    if output == "json":
        typer.echo(json.dumps([
            {"file": str(path), "document": c.what, "rules": c.rules, "version": c.version,
             "ok": c.ok, "findings": [{"where": f.where, "message": f.message}
                                      for f in c.findings]}
            for path, checked in results.items() for c in checked
        ], indent=2))  # fmt: skip
    else:
        for path, checked in results.items():
            for c in checked:
                if c.ok:
                    count = (
                        f"{c.rules} rule compiles" if c.rules == 1 else f"{c.rules} rules compile"
                    )
                    typer.echo(f"{path}: {c.what}: {count} (rules {c.version})")
                for finding in c.findings:
                    typer.echo(f"{path}: {c.what}: {finding}")
    if any(not c.ok for checked in results.values() for c in checked):
        raise typer.Exit(1)


def _rules_of(path: Path, features: FeatureSet | None) -> tuple[RuleSet, FeatureSet]:
    """The one rule set of ``path`` and its features (exit 1 with its findings when it does not
    compile)."""
    try:
        docs = read_documents(path)
    except FileProblem as exc:
        raise _fail(str(exc)) from exc
    checked = check_documents(docs, features)
    if len(checked) != 1:
        found = "no rules" if not checked else f"{len(checked)} rule sets"
        raise _fail(f"{path}: {found}; a backtest takes a file with one")
    (one,) = checked
    if one.ruleset is None or one.features is None:
        for finding in one.findings:
            typer.echo(f"{path}: {one.what}: {finding}", err=True)
        raise typer.Exit(1)
    return one.ruleset, one.features


@app.command()
def backtest(
    candidate: Annotated[
        Path, typer.Argument(help="the rules to try: a scorer config, FraudDetector or rules file")
    ],
    data: Annotated[
        str,
        typer.Option(
            help="labelled history: CSV, Parquet, or a postgresql:// URL (the case store)"
        ),
    ],
    table: Annotated[
        str, typer.Option(help="with a postgresql:// URL: a table or a SELECT query")
    ] = "training_examples",
    label_column: Annotated[str, typer.Option(help="the column saying 1 for fraud")] = "label",
    features: Annotated[
        Path | None,
        typer.Option(help="feature definitions, when the rules file declares none (else v1)"),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="the model directory (else decisions come from the rules alone)"),
    ] = None,
    against: Annotated[
        Path | None, typer.Option(help="the current rules, to report what the candidate changes")
    ] = None,
    served: Annotated[
        Path | None,
        typer.Option(
            help="decisions the scorers published (JSON lines, as on the decisions topic): "
            "decide on the features they had instead of replaying them"
        ),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="text or json")] = "text",
    chart: Annotated[
        Path | None, typer.Option(help="also draw alerts per rule, fraud and not, to this PNG")
    ] = None,
) -> None:
    """Decide labelled history with CANDIDATE's rules and thresholds, as a scorer would, and
    report per rule and overall what they catch."""
    from fraud_runtime.extras import require

    require("fraud-rules backtest", "training", ("pandas", "onnxruntime", "fraud_training"))
    from fraud_scorer.model import ModelError, load_model
    from fraud_training.data import DataError, read_table, validate

    from fraud_rules import backtest as bt

    if output not in ("text", "json"):
        raise _fail("--format is text or json")
    chosen = _features(features)
    ruleset, feature_set = _rules_of(candidate, chosen)
    current = None
    if against is not None:
        current, current_features = _rules_of(against, chosen or feature_set)
        if current_features.version != feature_set.version:
            raise _fail(
                f"{against} uses features {current_features.version}, {candidate} "
                f"{feature_set.version}: a backtest compares rules on the same features"
            )
    try:
        scorer_model = bt.RulesOnly() if model is None else load_model(model, features=feature_set)
        frame = validate(read_table(data, query=table), label_column=label_column)
    except (ModelError, DataError) as exc:
        raise _fail(str(exc)) from exc
    try:
        if served is None:
            history = bt.history_of(frame, feature_set)
        else:
            history = bt.history_of(frame, feature_set, _lines(served))
    except bt.ServedError as exc:
        raise _fail(f"{served}: {exc}") from exc
    decided = bt.decide(history, ruleset, scorer_model)
    before = None if current is None else bt.decide(history, current, scorer_model)
    result = bt.report(history, decided, before)
    if chart is not None:
        from fraud_rules.chart import draw

        draw(result, chart)
    if output == "json":
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print(result, str(candidate), None if against is None else str(against))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _print(result: Report, candidate: str, against: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 140))
    console.print(
        f"{candidate}: rules {result.rules_version} over {result.rows:,} transactions "
        f"({result.frauds:,} fraud, {result.fraud_amount:,.2f} in amount), features "
        f"{result.features_from}"
    )
    t = Table("rule", "action", "alerts", "rate", "precision", "recall", "fraud caught",
              "only this", "overlaps most with")  # fmt: skip
    for r in result.rules:
        f = r.figures
        most = max(r.overlap.items(), key=lambda kv: kv[1], default=None)
        t.add_row(
            r.name, r.action, f"{f.alerts:,}", _pct(f.alert_rate), _pct(f.precision),
            _pct(f.recall), f"{f.fraud_caught:,} ({f.fraud_amount:,.2f})", f"{r.only:,}",
            "-" if most is None else f"{most[0]} ({most[1]:,})",
        )  # fmt: skip
    for label, f in (("model", result.model), ("all alerts", result.overall)):
        t.add_row(
            label, "", f"{f.alerts:,}", _pct(f.alert_rate), _pct(f.precision), _pct(f.recall),
            f"{f.fraud_caught:,} ({f.fraud_amount:,.2f})", "", "",
        )  # fmt: skip
    console.print(t)
    console.print("actions: " + ", ".join(f"{a} {n:,}" for a, n in result.by_action.items()))
    d = result.against
    if d is not None:
        c = d.current
        console.print(
            f"against {against}: alerts {c.alerts:,} -> {result.overall.alerts:,}, precision "
            f"{_pct(c.precision)} -> {_pct(result.overall.precision)}, recall "
            f"{_pct(c.recall)} -> {_pct(result.overall.recall)}"
        )
        console.print(
            f"  new catches {d.new_catches:,} ({d.new_catches_amount:,.2f}), lost catches "
            f"{d.lost_catches:,} ({d.lost_catches_amount:,.2f}), extra false positives "
            f"{d.extra_false_positives:,}, fewer false positives {d.fewer_false_positives:,}, "
            f"actions changed {d.actions_changed:,}"
        )
    s = result.seconds
    console.print(
        f"{result.rows:,} rows in {s['features'] + s['decisions']:.1f} s ({s['rows_per_s']:,.0f} "
        f"rows/s; features {s['features']:.1f} s, decisions {s['decisions']:.1f} s)"
    )
