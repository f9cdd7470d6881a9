"""LDS against time: the figure and the points it is drawn from (a benchmark report)."""

from __future__ import annotations

import pytest

from attrcore import plots
from attrcore.app import bench_protocols, bench_time_points

DOC = {
    "task": "t",
    "settings": {"lds_protocols": ["random-seed", "fixed-seed"]},
    "ground_truth": {"fixed-seed": {}, "random-seed": {}},
    "rows": [
        {
            "method": "forward-only",
            "setting": "trajectory K=0",
            "setup_seconds": 5.0,
            "train_seconds": 3.0,
            "lds_random-seed": {"mean": 0.19, "sem": 0.01},
            "lds_fixed-seed": {"mean": 0.2, "sem": 0.01},
        },
        {
            "method": "trak",
            "setting": "M=10, proj 512",
            "setup_seconds": 30.0,
            "train_seconds": 30.0,
            "lds_random-seed": {"mean": 0.27, "sem": 0.01},
        },
        {
            "method": "if-cg",
            "setting": "GN",
            "setup_seconds": 1.0,
            "train_seconds": 3.0,
            "lds_random-seed": {"mean": 0.2, "sem": float("nan")},
        },
        {
            "method": "random",
            "setting": "seed 0",
            "setup_seconds": 0.0,
            "train_seconds": 3.0,
            "lds_random-seed": {"mean": 0.0, "sem": 0.01},
        },
    ],
}


def test_points_come_from_every_row_but_the_random_control_in_the_reports_protocol_order():
    assert bench_protocols(DOC) == ["random-seed", "fixed-seed"]
    unlisted = {**DOC, "settings": {}}  # a report written before the settings were kept
    assert bench_protocols(unlisted) == ["random-seed", "fixed-seed"]
    assert bench_protocols({**DOC, "settings": {"lds_protocols": ["fixed-seed"]}}) == ["fixed-seed", "random-seed"]
    pts = bench_time_points(DOC, "random-seed")
    assert pts["families"] == ["forward-only", "trak", "if"]
    assert pts["seconds"] == [8.0, 60.0, 4.0]
    assert pts["lds"] == [0.19, 0.27, 0.2]
    assert pts["errors"] == [0.01, 0.01, 0.0]  # a NaN error bar is drawn as none
    assert pts["labels"][0] == "trajectory K=0" and pts["labels"][1] == "trak: M=10, proj 512"
    assert bench_time_points(DOC, "fixed-seed")["labels"] == ["trajectory K=0"]


def test_lds_vs_time_draws_one_trace_per_family_on_a_log_axis():
    pts = bench_time_points(DOC, "random-seed")
    fig = plots.lds_vs_time(pts["labels"], pts["seconds"], pts["lds"], pts["families"], pts["errors"], 0.55)
    assert [t.name for t in fig.data] == ["forward-only", "trak", "if"]
    assert list(fig.data[1].x) == [60.0] and list(fig.data[1].y) == [0.27]
    assert fig.layout.xaxis.type == "log"
    with pytest.raises(ValueError, match="one entry per setting"):
        plots.lds_vs_time(["a"], [1.0, 2.0], [0.1], ["trak"])
