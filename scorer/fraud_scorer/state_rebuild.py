"""Feature state follows partition ownership: on assignment, each new partition's state is
rebuilt by replaying its recent messages up to the committed offset (see
:mod:`fraud_scorer.features` for why that reproduces an uninterrupted process's state).

The replay reads with a consumer of its own (group ``<group>.replay``, nothing committed) and
stops at whichever comes first: the history horizon (found by record timestamp, when the broker
can tell), ``replay_max_messages``, or the start of the partition's log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, TopicPartition
from fraud_runtime.settings import KafkaSettings

from fraud_scorer.pipeline import Record

log = structlog.get_logger("fraud_scorer")

# A partition's replay gives up after this long: a scorer that never finishes rebuilding is
# worse than one that scores with the state it has (the rest fills in as traffic arrives).
_REPLAY_DEADLINE_S = 600.0
# Finding the horizon reads one record and asks for an offset by time; both are quick on a
# healthy broker, and a broker that cannot answer in 10 s gets a count-bounded replay instead.
_PROBE_TIMEOUT_S = 10.0
# Events slightly older than the horizon may still be inside it for a late event.
_HORIZON_MARGIN_MS = 3_600_000


@dataclass(frozen=True)
class StateRebuilder:
    """Replays newly assigned partitions through ``replay`` (the scorer's feature engine)."""

    kafka: KafkaSettings
    history_hours: float
    max_messages: int
    replay: Callable[[list[Record]], int]
    # Called between replayed batches: a rebuild of millions of messages runs inside the
    # assignment callback, and liveness must still see a live process.
    alive: Callable[[], None] = lambda: None

    def rebuild(self, consumer: Consumer, partitions: list[TopicPartition]) -> dict[int, int]:
        """Replay each partition up to the offset it resumes from (the runtime's
        ``on_assigned`` gives them); returns messages replayed per partition (those with no
        offset are new: nothing to replay)."""
        committed = partitions
        replayer = Consumer(
            {
                **self.kafka.client_config(),
                "group.id": f"{self.kafka.group_id}.replay",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        replayed: dict[int, int] = {}
        try:
            for tp in committed:
                if tp.offset == OFFSET_INVALID or tp.offset <= 0:
                    continue
                n = replayed[tp.partition] = self._replay_partition(replayer, tp)
                log.info(
                    "state rebuilt", partition=tp.partition, replayed=n, until_offset=tp.offset
                )
        finally:
            replayer.close()
        return replayed

    def _replay_partition(self, replayer: Consumer, tp: TopicPartition) -> int:
        end = tp.offset
        low, _high = replayer.get_watermark_offsets(
            TopicPartition(tp.topic, tp.partition), timeout=_PROBE_TIMEOUT_S
        )
        start = replay_start(low, end, self.max_messages, self._horizon_offset(replayer, tp))
        if start >= end:
            return 0
        replayer.assign([TopicPartition(tp.topic, tp.partition, start)])
        replayed, position = 0, start
        deadline = time.monotonic() + _REPLAY_DEADLINE_S
        while position < end and time.monotonic() < deadline:
            usable: list[Record] = []
            for msg in replayer.consume(5000, 0.1):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        position = end
                    continue
                off = msg.offset()
                if off is None or off >= end:
                    position = end
                    break
                usable.append(msg)  # type: ignore[arg-type]
                position = off + 1
            replayed += self.replay(usable)
            self.alive()
        replayer.unassign()
        return replayed

    def _horizon_offset(self, replayer: Consumer, tp: TopicPartition) -> int:
        """The first offset inside the history horizon, by record timestamp, or -1 if the
        broker cannot tell (librdkafka's mock cluster cannot)."""
        horizon_ms = int(self.history_hours * 3600 * 1000) + _HORIZON_MARGIN_MS
        replayer.assign([TopicPartition(tp.topic, tp.partition, tp.offset - 1)])
        last = None
        deadline = time.monotonic() + _PROBE_TIMEOUT_S
        while last is None and time.monotonic() < deadline:
            for msg in replayer.consume(1, 0.2):
                if msg.error() is None:
                    last = msg
        replayer.unassign()
        if last is None:
            return -1
        _, ts = last.timestamp()
        found = replayer.offsets_for_times(
            [TopicPartition(tp.topic, tp.partition, ts - horizon_ms)], timeout=_PROBE_TIMEOUT_S
        )
        return found[0].offset if found else -1


def replay_start(low: int, end: int, max_messages: int, horizon: int) -> int:
    """The first offset to replay before ``end``: the latest of the log's start (``low``),
    ``max_messages`` back, and the history horizon (``-1``, or anything outside the log:
    unknown)."""
    start = max(low, end - max_messages)
    return max(start, horizon) if low <= horizon < end else start
