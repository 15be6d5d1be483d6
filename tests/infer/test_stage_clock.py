"""The stage clock and the prefetch thread of the tiled predictor."""

from __future__ import annotations

import threading

import pytest

from groundbreak.infer.prediction.stage_clock import StageClock, prefetched


def test_prefetched_yields_every_result_in_order() -> None:
    assert list(prefetched(lambda x: x * x, range(20), depth=3)) == [x * x for x in range(20)]


def test_an_error_of_the_producer_is_raised_at_its_item() -> None:
    def produce(x: int) -> int:
        if x == 3:
            raise ValueError("unreadable band")
        return x

    seen = []
    with pytest.raises(ValueError, match="unreadable band"):
        for value in prefetched(produce, range(10)):
            seen.append(value)
    assert seen == [0, 1, 2]


def test_a_consumer_that_stops_early_stops_the_thread() -> None:
    produced = []
    results = prefetched(produced.append, range(1000), depth=2)
    next(results)
    results.close()
    assert not any(t.name == "groundbreak-prefetch" for t in threading.enumerate())
    assert len(produced) < 10


def test_the_clock_sums_each_stage() -> None:
    clock = StageClock()
    clock.add("read", 1.5)
    clock.add("read", 0.25)
    with clock.time("model"):
        pass
    assert clock.seconds["read"] == 1.75 and clock.seconds["model"] >= 0
