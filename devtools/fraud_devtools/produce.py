"""``fraud-produce``: stream synthetic transactions to a Kafka topic at a fixed rate, keyed by
user id (the kind cluster's traffic; ``scripts/kind-up.sh`` runs it in the tools image).

    fraud-produce --bootstrap broker:9092 --rate 500 --loop
"""

from __future__ import annotations

import itertools
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fraud_devtools.producer import send_paced

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)


@app.command()
def produce(
    bootstrap: Annotated[str, typer.Option(help="Kafka bootstrap servers")],
    topic: str = "transactions",
    users: int = 20000,
    days: float = 7.0,
    rate: Annotated[float, typer.Option(help="transactions per second")] = 500.0,
    seed: int = 7,
    limit: Annotated[int, typer.Option(help="stop after this many (0: the whole stream)")] = 0,
    loop: Annotated[bool, typer.Option(help="start over at the end, forever")] = False,
) -> None:
    """Stream synthetic transactions to a Kafka topic at a fixed rate, keyed by user id."""
    from confluent_kafka import Producer
    from fraud_training.data import to_payloads
    from fraud_training.synth import SynthConfig, generate

    frame = generate(SynthConfig(users=users, days=days, seed=seed))
    stream = list(zip((u.encode() for u in frame["user_id"]), to_payloads(frame), strict=True))
    # --limit may exceed the generated stream: it starts over, as --loop does.
    total = limit or len(stream)
    items = itertools.cycle(stream) if loop else itertools.islice(itertools.cycle(stream), total)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "client.id": "fraud-producer"}
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(
            f"producing to {topic} at {rate:,.0f}/s", total=None if loop else total
        )
        sent = send_paced(
            producer,
            topic,
            items,
            rate,
            on_progress=lambda n: progress.update(task, completed=n),
        )
    remaining = producer.flush(30)
    if remaining:
        console.print(f"[red]{remaining} message(s) not delivered to {bootstrap}[/red]")
        raise typer.Exit(2)
    console.print(f"produced {sent:,} transactions to {topic}")
