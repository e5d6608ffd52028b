"""Faults, for real: scorer processes killed with SIGKILL at random points of a 200k stream,
consumers scaled up and down mid-stream, the broker taken away for 30 s. Every time: every
transaction decided (once, after de-duplication by key), none lost, no alert posted twice.

Figures these tests print (``pytest -s``) are recorded in docs/reliability.md.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pandas as pd
import pytest
from fraud_devtools.mock_cluster import MockCluster
from fraud_devtools.producer import send_paced
from fraud_sinks.config import SinkSettings
from fraud_sinks.service import SinkService
from fraud_training.synth import SynthConfig, generate

from tests.integration.harness import (
    TOPICS,
    ScorerProcess,
    committed,
    produce,
    read_topic,
    reference_features,
    stream,
    wait_until,
)
from tests.servers import Receiver, http_receiver

pytestmark = pytest.mark.integration
# librdkafka's mock cluster keeps about 5 MB per partition: spread 200k messages wide.
PARTITIONS = 32


@pytest.fixture
def wide_cluster() -> Iterator[MockCluster]:
    with MockCluster() as mc:
        for topic in TOPICS.values():
            mc.create_topic(topic, PARTITIONS)
        yield mc


@pytest.fixture
def webhook(wide_cluster: MockCluster) -> Iterator[Receiver]:
    """A webhook sink (in this process) posting every alert to a local HTTP server."""
    with http_receiver() as hook:
        settings = SinkSettings.model_validate(
            {
                "sink": "webhook",
                "kafka": {
                    "bootstrap_servers": wide_cluster.bootstrap_servers,
                    "group_id": "sink",
                },
                "topics": {"alerts": TOPICS["alerts"], "dead_letter": "sink-dlq"},
                "webhook": {"url": hook.url, "style": "json", "rate_per_s": 1e6, "burst": 10**6},
                "metrics": {"host": "127.0.0.1", "port": 0},
            }
        )
        service = SinkService(settings)
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        try:
            yield hook
        finally:
            service.stop()
            thread.join(60)


def progress(bootstrap: str, group: str = "fraud-scorer") -> int:
    return sum(max(0, o) for o in committed(bootstrap, group, TOPICS["input"], PARTITIONS).values())


def done(bootstrap: str, group: str, total: int) -> bool:
    return progress(bootstrap, group) >= total


def test_random_kill_9_loses_nothing_and_posts_no_alert_twice(
    wide_cluster: MockCluster, tmp_path: Path, model_dir: Path, webhook: Receiver
) -> None:
    bootstrap = wide_cluster.bootstrap_servers
    frame: pd.DataFrame = generate(SynthConfig(users=24_000, days=3.0, seed=41))
    items = stream(frame.iloc[:200_000])
    assert len(items) == 200_000
    produce(bootstrap, TOPICS["input"], items)
    scorers = [
        ScorerProcess(
            tmp_path,
            bootstrap,
            model_dir,
            name=f"s{i}",
            output={"include_features": False},
            batch={"max_messages": 500},
        ).start(wait_ready=False)
        for i in range(2)
    ]
    rng, kills = random.Random(8), 0
    while kills < 8 and not done(bootstrap, "fraud-scorer", len(items)):
        # Strike while the stream is flowing: once the group commits again, at a random moment.
        mark = progress(bootstrap)
        wait_until(lambda m=mark: progress(bootstrap) > m + 2_000, 120, "progress")
        time.sleep(rng.uniform(0.0, 1.0))
        victim = rng.choice(scorers)
        victim.stop(signal.SIGKILL)
        kills += 1
        victim.start(wait_ready=False)
    wait_until(lambda: done(bootstrap, "fraud-scorer", len(items)), 240, "every offset committed")
    for s in scorers:
        wait_until(s.ready, 60, "the last restart ready")
        assert s.stop() == 0

    decisions = read_topic(bootstrap, TOPICS["decisions"], PARTITIONS)
    copies = Counter(r.key for r in decisions)
    expected = {json.loads(v)["transaction_id"].encode() for _, v in items}
    assert set(copies) == expected  # every transaction decided, nothing invented
    duplicates = len(decisions) - len(copies)
    alerts = {r.key for r in read_topic(bootstrap, TOPICS["alerts"], PARTITIONS)}
    wait_until(lambda: len(webhook.keys) >= len(alerts), 120, "every alert posted")
    time.sleep(2)  # anything posted twice would arrive now
    assert sorted(webhook.keys) == sorted(k.decode() for k in alerts)  # once each
    for r in decisions[:1000]:
        d = msgspec.json.decode(r.value)
        assert d["transaction_id"].encode() == r.key
    print(
        f"\nkill -9 x{kills}: {len(items)} transactions, {len(decisions)} decisions, "
        f"{duplicates} duplicates ({duplicates / len(items):.2%}) before de-duplication; "
        f"{len(alerts)} alerts, {webhook.posts} posts"
    )
    assert kills >= 3, "the stream finished before the chaos got going"


def paced(bootstrap: str, items: list[tuple[bytes, bytes]], per_s: int) -> threading.Thread:
    """Produce ``items`` once, at ``per_s``, from a background thread (buffers while the
    broker is away, as a real producer would)."""
    from confluent_kafka import Producer

    def run() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        send_paced(producer, TOPICS["input"], items, per_s, every=max(per_s // 10, 1))
        assert producer.flush(120) == 0

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def holds_partitions(scorer: ScorerProcess) -> bool:
    """Whether ``scorer`` has logged an assignment of at least one input partition."""
    held = f'"{TOPICS["input"]}['
    return any("partitions assigned" in line and held in line for line in scorer.log().splitlines())


def test_broker_away_for_30s_scorer_not_ready_keeps_state_and_catches_up(
    wide_cluster: MockCluster, tmp_path: Path, model_dir: Path, small_stream: pd.DataFrame
) -> None:
    bootstrap = wide_cluster.bootstrap_servers
    items = stream(small_stream.iloc[:12_000])
    scorer = ScorerProcess(tmp_path, bootstrap, model_dir, name="steady")
    scorer.config["kafka"]["extra"] = {}  # default 45 s session: the group outlives the outage
    scorer.write_config()
    scorer.start()
    producer = paced(bootstrap, items, per_s=300)  # 40 s of traffic
    wait_until(lambda: scorer.metric("fraud_transactions_total") > 1000, 60, "traffic")
    users = scorer.metric("fraud_state_users")
    replayed = scorer.metric("fraud_state_replayed_messages_total")

    wide_cluster.broker_down()
    down_at = time.monotonic()
    wait_until(lambda: scorer.get("/readyz")[0] == 503, 30, "not ready while the broker is away")
    noticed = time.monotonic() - down_at
    assert "no Kafka broker reachable" in scorer.get("/readyz")[1]
    assert scorer.get("/healthz")[0] == 200  # alive: no restart wanted, just no traffic
    time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
    wide_cluster.broker_up()
    up_at = time.monotonic()

    wait_until(scorer.ready, 60, "ready again")
    ready_again = time.monotonic() - up_at
    producer.join(120)
    wait_until(lambda: scorer.metric("fraud_transactions_total") >= len(items), 120, "caught up")
    caught_up = time.monotonic() - up_at
    # The same process held its feature state through the outage: nothing was rebuilt, no
    # user forgotten.
    assert scorer.get("/metrics")[0] == 200
    assert scorer.metric("fraud_state_replayed_messages_total") == replayed
    assert scorer.metric("fraud_state_users") >= users > 0
    assert scorer.stop() == 0
    decided = {r.key for r in read_topic(bootstrap, TOPICS["decisions"], PARTITIONS)}
    assert decided == {json.loads(v)["transaction_id"].encode() for _, v in items}
    print(
        f"\nbroker away 30 s: not ready after {noticed:.1f} s, ready {ready_again:.1f} s "
        f"after it came back, every transaction decided {caught_up:.1f} s after"
    )


def test_scaling_consumers_up_and_down_mid_stream_keeps_features_identical(
    wide_cluster: MockCluster, tmp_path: Path, model_dir: Path, small_stream: pd.DataFrame
) -> None:
    bootstrap = wide_cluster.bootstrap_servers
    items = stream(small_stream.iloc[:12_000])
    first = ScorerProcess(tmp_path, bootstrap, model_dir, name="first").start()
    before = paced(bootstrap, items[:6000], per_s=600)  # 10 s of traffic
    wait_until(lambda: first.metric("fraud_transactions_total") > 1000, 60, "traffic")
    extra = [ScorerProcess(tmp_path, bootstrap, model_dir, name=f"x{i}").start() for i in (1, 2)]
    # The rest of the traffic waits for the group to take in both new members, however long a
    # loaded machine makes that: a stream that ended before the rebalance would leave them
    # nothing to decide.
    wait_until(lambda: all(holds_partitions(s) for s in extra), 60, "both extras assigned")
    before.join(120)
    producer = paced(bootstrap, items[6000:], per_s=600)  # 10 s more
    wait_until(
        lambda: all(s.metric("fraud_transactions_total") > 0 for s in extra), 60, "scaled up to 3"
    )
    rebuilt = sum(s.metric("fraud_state_replayed_messages_total") for s in extra)
    for s in extra:  # scale back down to 1, one at a time, mid-stream
        time.sleep(3)
        assert s.stop() == 0
    producer.join(120)
    wait_until(lambda: first.metric("fraud_consumer_lag") == 0, 60, "the lag to recover to 0")
    wait_until(
        lambda: (
            len({r.key for r in read_topic(bootstrap, TOPICS["decisions"], PARTITIONS)})
            == len(items)
        ),
        60,
        "every transaction decided",
    )
    assert first.stop() == 0

    reference = reference_features(items)
    decisions = [
        msgspec.json.decode(r.value) for r in read_topic(bootstrap, TOPICS["decisions"], PARTITIONS)
    ]
    assert {d["transaction_id"] for d in decisions} == reference.keys()
    for d in decisions:  # whichever scorer decided it, after however many hand-overs
        assert d["features"] == reference[d["transaction_id"]], d["transaction_id"]
    print(
        f"\nscale 1 -> 3 -> 1: {len(items)} transactions, {len(decisions)} decisions "
        f"({len(decisions) - len(items)} duplicates), {rebuilt:.0f} messages replayed to "
        "rebuild state on the new consumers"
    )
