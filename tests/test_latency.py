"""The latency model: settled-block timing, the roofline, calibration, its cache, ``choose``."""

from __future__ import annotations

from mobilenet.deploy.timing import time_interleaved


def test_interleaved_timing_runs_each_candidate_in_settled_blocks_in_shuffled_rounds() -> None:
    """The mechanism that keeps one runtime's spinning pool off its neighbour's clock: after the
    warm-up, calls come in contiguous blocks per candidate (untimed settling calls, then the timed
    ones), every candidate once per round, in an order that changes between rounds. (A block of
    1e-6 s is one timed call whatever the machine's speed, so the pattern is exact.)"""
    calls: list[str] = []
    runs = [lambda name=name: calls.append(name) for name in "abc"]
    samples = time_interleaved(runs, seconds=0, min_runs=20, warmup=2, block_s=1e-6, settle_calls=3, settle_s=0,
                               seed=1)
    warmup = 3 * len(runs)  # 2 warm-up calls and 1 sizing call each, candidate after candidate
    assert calls[:warmup] == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    body = calls[warmup:]
    blocks = [body[i:i + 4] for i in range(0, len(body), 4)]  # 3 settling calls + 1 timed call
    assert all(len(set(block)) == 1 and len(block) == 4 for block in blocks), "contiguous settled blocks"
    rounds = [tuple(block[0] for block in blocks[i:i + 3]) for i in range(0, len(blocks), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds), "every candidate runs once per round"
    assert len(set(rounds)) > 1, "the order is shuffled between rounds"
    assert [len(s) for s in samples] == [len(rounds)] * 3 == [20] * 3, "one timed call per block"
