"""``fraudctl`` (also ``kubectl fraud``): FraudDetectors from a terminal, for SREs and ML
engineers, instead of hand-written annotations and JSONPath.

    fraudctl status [-n NS | -A] [--json]   # detectors, tracks, weights, the last analysis
    fraudctl promote NAME -n NS             # finish the rollout now
    fraudctl abort NAME -n NS               # roll the candidate back now
    fraudctl pause NAME -n NS / resume      # hold the rollout where it is, or let it go on
    fraudctl explain TX_ID --dsn ...        # a decision and its reasons, from the case store
    fraudctl explain TX_ID --kafka ... --topic fraud-alerts --since 6h   # or from a topic

It talks to the cluster as kubectl does (the current kubeconfig context, or in-cluster), with
the caller's own rights: ``promote``, ``abort``, ``pause`` and ``resume`` need ``patch`` on
frauddetectors, ``status`` only ``list``. Installed as ``kubectl-fraud`` too, so kubectl finds
it as a plugin.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fraud_operator.spec import GROUP, PLURAL, VERSION

app = typer.Typer(
    help="FraudDetectors from a terminal: status, promote, abort, pause, resume, explain.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
Namespace = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="the namespace (default: the context's)"),
]
Name = Annotated[str, typer.Argument(help="the FraudDetector's name")]


def _api(context: str | None = None) -> Any:
    from kubernetes import client, config

    try:
        config.load_kube_config(context=context)  # type: ignore[no-untyped-call]
        contexts, current = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
        chosen = next((c for c in contexts if c["name"] == context), current)
        namespace = chosen["context"].get("namespace")  # the namespace kubectl would use
    except config.ConfigException:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        namespace = None
    return client.CustomObjectsApi(), namespace or "default"


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]{message}[/red]")
    return typer.Exit(1)


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A Kubernetes call, with its refusal said in one line (403, 404), not a traceback."""
    from kubernetes.client.exceptions import ApiException

    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        reason = {403: "refused (your RBAC rights)", 404: "not found"}.get(exc.status, exc.reason)
        raise _fail(f"{reason}: {json.loads(exc.body or '{}').get('message', '')}") from exc


def summary(fd: dict[str, Any]) -> dict[str, Any]:
    """One FraudDetector's line of ``status``: what ``kubectl get fd`` shows, the rollout, and
    the last analysis (its verdict and each check's measure)."""
    status = fd.get("status") or {}
    conditions: list[dict[str, Any]] = status.get("conditions") or []
    ready: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
    rollout = status.get("rollout") or {}
    analysis = rollout.get("lastAnalysis") or {}
    values = analysis.get("values") or {}
    measured = ", ".join(f"{k} {v:.3g}" for k, v in values.items() if isinstance(v, int | float))
    return {
        "namespace": fd["metadata"]["namespace"],
        "name": fd["metadata"]["name"],
        "ready": ready.get("status", "Unknown"),
        "reason": ready.get("reason", ""),
        "phase": status.get("phase", ""),
        "rollout": rollout.get("phase", ""),
        "stable": status.get("stableVersion") or "",
        "canary": status.get("canaryVersion") or "",
        "weight": status.get("canaryWeight") or 0,
        "replicas": status.get("readyReplicas") or 0,
        "rules": status.get("rulesVersion") or "",
        "analysis": (f"{analysis.get('verdict', '')}: {measured}".strip(": ") if analysis else ""),
        "message": rollout.get("message") or ready.get("message", ""),
    }


@app.command()
def status(
    namespace: Namespace = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="every namespace")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout")] = False,
    context: Annotated[str | None, typer.Option(help="the kubeconfig context")] = None,
) -> None:
    """Each FraudDetector: Ready and why, its rollout, stable and canary models, the canary's
    weight, ready scorers, its rules' version and the last analysis."""
    api, default = _api(context)
    if all_namespaces:
        found = _call(api.list_cluster_custom_object, GROUP, VERSION, PLURAL)
    else:
        found = _call(
            api.list_namespaced_custom_object, GROUP, VERSION, namespace or default, PLURAL
        )
    rows = [summary(fd) for fd in found.get("items", [])]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(
        *(["namespace"] if all_namespaces else []),
        "name", "ready", "reason", "rollout", "stable", "canary", "weight", "replicas",
        "last analysis",
    )  # fmt: skip
    for r in rows:
        table.add_row(
            *([r["namespace"]] if all_namespaces else []),
            r["name"], r["ready"], r["reason"], r["rollout"] or r["phase"], r["stable"],
            r["canary"], f"{r['weight']}%" if r["canary"] else "", str(r["replicas"]),
            r["analysis"],
        )  # fmt: skip
    Console().print(table)
    for r in rows:
        if r["ready"] != "True" and r["message"]:
            err.print(f"{r['namespace']}/{r['name']}: {r['message']}")


def _annotate(name: str, namespace: str | None, context: str | None, key: str) -> None:
    api, default = _api(context)
    ns = namespace or default
    patch = {"metadata": {"annotations": {f"{GROUP}/{key}": "true"}}}
    _call(api.patch_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, name, patch)
    err.print(f"{ns}/{name}: {key} requested; the operator acts on its next pass")


Context = Annotated[str | None, typer.Option(help="the kubeconfig context")]


@app.command()
def promote(name: Name, namespace: Namespace = None, context: Context = None) -> None:
    """Promote the candidate now (the frauddetection.io/promote annotation). The operator
    refuses a candidate whose last analysis blocked more than analysis.maxBlockShare."""
    _annotate(name, namespace, context, "promote")


@app.command()
def abort(name: Name, namespace: Namespace = None, context: Context = None) -> None:
    """Roll the candidate back now (the frauddetection.io/abort annotation)."""
    _annotate(name, namespace, context, "abort")


def _pause(name: str, namespace: str | None, context: str | None, paused: bool) -> None:
    api, default = _api(context)
    ns = namespace or default
    fd = _call(api.get_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, name)
    if not (fd.get("spec") or {}).get("rollout"):
        raise _fail(f"{ns}/{name} has no spec.rollout: there is no rollout to pause")
    patch = {"spec": {"rollout": {"paused": paused}}}
    _call(api.patch_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, name, patch)
    err.print(
        f"{ns}/{name}: rollout {'paused' if paused else 'resumed'} (spec.rollout.paused); "
        "with GitOps, make the same change in Git or it will be undone"
    )


@app.command()
def pause(name: Name, namespace: Namespace = None, context: Context = None) -> None:
    """Hold the rollout where it is (spec.rollout.paused: true)."""
    _pause(name, namespace, context, True)


@app.command()
def resume(name: Name, namespace: Namespace = None, context: Context = None) -> None:
    """Let a paused rollout go on (spec.rollout.paused: false)."""
    _pause(name, namespace, context, False)


@app.command()
def explain(
    transaction_id: Annotated[str, typer.Argument(help="the transaction's id")],
    dsn: Annotated[
        str | None,
        typer.Option(envvar="FRAUD_CASES_DSN", help="postgresql://... of the case store"),
    ] = None,
    kafka: Annotated[
        str | None,
        typer.Option(help="bootstrap servers: read the decision from a topic instead"),
    ] = None,
    topic: Annotated[
        str, typer.Option(help="with --kafka: the decisions (or alerts, with reasons) topic")
    ] = "scored-transactions",
    since: Annotated[
        str, typer.Option(help="with --kafka: how far back to look: 30m, 6h, 2d, or all")
    ] = "1h",
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout")] = False,
) -> None:
    """Why a transaction was decided as it was: its action, score, the rules that fired with
    the values they read, and the model's top contributing features. From the case store, or
    from a decisions or alerts topic (the newest decision for it since --since)."""
    if (dsn is None) == (kafka is None):
        raise typer.BadParameter("give --dsn (or FRAUD_CASES_DSN) or --kafka", param_hint="--dsn")
    case = _from_topic(transaction_id, kafka, topic, since) if kafka else _from_store(
        transaction_id, dsn or ""
    )  # fmt: skip
    if case is None:
        where = f"topic {topic} since {since}" if kafka else "the case store"
        raise _fail(f"no decision for {transaction_id} in {where}")
    if as_json:
        typer.echo(json.dumps(case, default=str))
        return
    _render(case)


def _from_store(transaction_id: str, dsn: str) -> dict[str, Any] | None:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(dsn, connect_timeout=10) as conn, conn.cursor(row_factory=dict_row) as cur:
        found: dict[str, Any] | None = cur.execute(
            "SELECT transaction_id, detector, track, action, score, reasons, model_version, "
            "rules_version, scored_at, why, verdict FROM cases WHERE transaction_id = %s",
            (transaction_id,),
        ).fetchone()
    return found


def _from_topic(
    transaction_id: str, bootstrap: str, topic: str, since: str
) -> dict[str, Any] | None:
    """The newest decision keyed ``transaction_id`` on ``topic`` since ``since`` ago: every
    partition read from that time to its end (no consumer group, nothing committed)."""
    try:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition
    except ImportError:
        raise _fail(
            "--kafka needs the Kafka client: pip install 'fraud-detector[ctl,runtime]'"
        ) from None
    import time

    units = {"m": 60, "h": 3600, "d": 86400}
    if since != "all" and (since[-1:] not in units or not since[:-1].isdigit()):
        raise typer.BadParameter("30m, 6h, 2d or all", param_hint="--since")
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "fraudctl-explain",
        "enable.auto.commit": False, "enable.partition.eof": True,
    })  # fmt: skip
    key, found = transaction_id.encode(), None
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise _fail(f"topic {topic} not found on {bootstrap}")
        if since == "all":  # the whole retained log
            positions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        else:  # the broker finds the first offset at or after the time
            start_ms = int((time.time() - int(since[:-1]) * units[since[-1]]) * 1000)
            wanted = [TopicPartition(topic, p, start_ms) for p in meta.partitions]
            positions = consumer.offsets_for_times(wanted, timeout=10)
        consumer.assign(positions)
        open_partitions = {tp.partition for tp in positions if tp.offset != OFFSET_END}
        deadline = time.monotonic() + 60
        while open_partitions and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                open_partitions.discard(msg.partition() or 0)  # end of partition, or broken
                continue
            if msg.key() == key:
                found = json.loads(msg.value() or b"{}")
    finally:
        consumer.close()
    return found


def _render(case: dict[str, Any]) -> None:
    console = Console()
    console.print(
        f"[bold]{case['transaction_id']}[/bold]: {case['action']} (score {case['score']:.3f}) "
        f"by {case['detector']}/{case['track']}, model {case['model_version']}, rules "
        f"{case['rules_version']}, at {case['scored_at']}"
    )
    console.print(f"reasons: {', '.join(case['reasons']) or 'none'}")
    why = case.get("why") or {}
    for rule in why.get("rules") or []:
        values = ", ".join(f"{k} = {v}" for k, v in (rule.get("values") or {}).items())
        console.print(f"  rule {rule.get('rule')}: {values}")
    model = why.get("model") or {}
    if model:
        table = Table("feature", "value", "contribution", title="the model's top features")
        for c in model.get("top") or []:
            table.add_row(
                str(c.get("feature")), str(c.get("value")), f"{c.get('contribution'):+.4f}"
            )
        console.print(table)
    elif case.get("features"):
        table = Table("feature", "value", title="the features the model read")
        for name, value in case["features"].items():
            table.add_row(name, f"{value:.4g}")
        console.print(table)
    if case.get("verdict"):
        console.print(f"analyst's verdict: {case['verdict']}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
