"""Which offsets the runtime may store: the next offset per partition, taken once."""

from __future__ import annotations

import time

from fraud_runtime.offsets import OffsetTracker

from tests.records import Msg


def rec(topic: str, partition: int, offset: int) -> Msg:
    return Msg(b"{}", _topic=topic, _partition=partition, _offset=offset)


def test_the_last_record_of_each_partition_wins_and_is_taken_once() -> None:
    t = OffsetTracker(store_after_s=60)
    assert not t
    t.done([rec("tx", 0, 5), rec("tx", 1, 7), rec("tx", 0, 6), rec("other", 0, 1)])
    assert t
    taken = {(tp.topic, tp.partition): tp.offset for tp in t.take()}
    assert taken == {("tx", 0): 7, ("tx", 1): 8, ("other", 0): 2}
    assert not t and t.take() == []


def test_only_the_partitions_asked_for_are_taken() -> None:
    t = OffsetTracker(store_after_s=60)
    t.done([rec("tx", 0, 5), rec("tx", 1, 7)])
    assert [(tp.partition, tp.offset) for tp in t.take({("tx", 1)})] == [(1, 8)]
    assert [(tp.partition, tp.offset) for tp in t.take()] == [(0, 6)]


def test_lost_partitions_are_forgotten_and_overdue_follows_the_oldest_pending() -> None:
    t = OffsetTracker(store_after_s=0.05)
    t.done([rec("tx", 0, 5)])
    assert not t.overdue()
    time.sleep(0.1)
    assert t.overdue()
    t.forget([("tx", 0)])
    assert not t and not t.overdue()
