"""``fraud-rules``: rules checked (and, next, backtested) offline.

Exit codes, for CI and GitOps pipelines: 0 every rules document compiles; 1 some rule or
threshold is wrong (each finding on its own line: file, rule, column, what to change); 2 the
command could not do its work (a file missing or not YAML, no rules in any file). A file
without rules (a Secret, a model server) is skipped with a note.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from fraud_scorer import feature_sets
from fraud_scorer.feature_defs import parse_feature_set
from fraud_scorer.feature_sets import FeatureSet
from pydantic import ValidationError

from fraud_rules.check import Checked, check_documents

app = typer.Typer(
    help="Check fraud rules offline with the scorer's own compiler.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """Rules as a product: checked before they reach a cluster."""


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _features(path: Path | None) -> FeatureSet | None:
    if path is None:
        return None
    try:
        return feature_sets.declared(parse_feature_set(yaml.safe_load(path.read_text())))
    except (OSError, yaml.YAMLError) as exc:
        raise _fail(f"{path}: {exc}") from exc
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
            docs = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as exc:
            raise _fail(f"{path}: {exc}") from exc
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
