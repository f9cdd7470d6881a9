"""The pieces the benchmark scripts share (attrcore.evaluation.bench)."""

from __future__ import annotations

from attrcore.evaluation.bench import round_robin


def test_round_robin_times_every_call_once_per_round_in_turn_after_a_warm_up():
    calls: list[str] = []
    timers = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "slow")}
    wall, cpu = round_robin(timers, rounds=3, max_rounds={"slow": 1})
    assert calls == ["a", "b", "slow", "a", "b", "slow", "a", "b", "a", "b"]  # warm-up, then rounds in turn
    assert {k: len(v) for k, v in wall.items()} == {"a": 3, "b": 3, "slow": 1}
    assert {k: len(v) for k, v in cpu.items()} == {"a": 3, "b": 3, "slow": 1}
    assert all(t >= 0 for v in [*wall.values(), *cpu.values()] for t in v)
