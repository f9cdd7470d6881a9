"""The scaling benchmark's report on the Cost page: series and log-log figures."""

from __future__ import annotations

import json

import pytest

from attrcore import plots
from attrcore.app import scale


def test_series_and_figure(tmp_path):
    rows = [
        {
            "n": 4000,
            "params": "80k",
            "p": 78858,
            "method": "grouped-100",
            "seconds_per_query": 0.003,
            "setup_seconds": 120,
        },
        {
            "n": 20000,
            "params": "80k",
            "p": 78858,
            "method": "grouped-100",
            "seconds_per_query": 0.003,
            "setup_seconds": 600,
        },
        {"n": 4000, "params": "80k", "p": 78858, "method": "trak-10", "seconds_per_query": 0.14, "setup_seconds": 300},
        {"n": 4000, "params": "300k", "p": 288778, "method": "trak-10", "seconds_per_query": 0.5, "setup_seconds": 900},
        {"n": 20000, "params": "80k", "method": "trak-10", "error": "timeout"},
    ]
    path = tmp_path / "scale.json"
    path.write_text(json.dumps({"rows": rows, "command": "x"}))
    doc = scale.scale_report(path)
    assert scale.scale_report(tmp_path / "missing.json") is None
    s = scale.scale_series(doc)  # against n at the smallest model; the failed cell is left out
    assert s == {"grouped-100": ([4000, 20000], [3.0, 3.0]), "trak-10": ([4000], [140.0])}
    by_p = scale.scale_series(doc, y="setup_seconds", against="p")
    assert by_p["trak-10"] == ([78858, 288778], [300.0, 900.0])
    fig = plots.scaling_lines(s)
    assert [t.name for t in fig.data] == ["grouped-100", "trak-10"]
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"


def test_speedups_pair_rows_with_trak10_of_the_same_run_and_cell():
    rows = [
        {"run": 0, "n": 4000, "params": "1m", "p": 969354, "epochs": 2, "method": "trak-10", "seconds_per_query": 3.0},
        {
            "run": 0,
            "n": 4000,
            "params": "1m",
            "p": 969354,
            "epochs": 2,
            "method": "grouped-100",
            "seconds_per_query": 0.03,
        },
        {
            "run": 1,
            "n": 4000,
            "params": "1m",
            "p": 969354,
            "epochs": 2,
            "method": "grouped-10",
            "seconds_per_query": 0.003,
        },  # another run: no peer
        {"run": 0, "n": 4000, "params": "1m", "p": 969354, "epochs": 2, "method": "trak-1", "error": "x"},
    ]
    s = scale.speedups({"rows": rows})
    assert list(s) == ["n=4,000, p=969,354"]
    assert s["n=4,000, p=969,354"] == {"grouped-100": pytest.approx(100.0)}
    # by CPU time: only rows that recorded it (run 0's grouped-100 and its TRAK-10 here)
    rows[0]["cpu_seconds_per_query"], rows[1]["cpu_seconds_per_query"] = 1.0, 0.02
    assert scale.speedups({"rows": rows}, timing="cpu_seconds_per_query") == {
        "n=4,000, p=969,354": {"grouped-100": pytest.approx(50.0)}
    }
    fig = plots.speedup_bars(s, targets={"100×": 100})
    assert [t.name for t in fig.data] == ["grouped-100"]
    assert fig.layout.yaxis.type == "log"
    assert fig.data[0].y == pytest.approx((100.0,))
    # the target line at 100 and its label sit at 100 on the log axis (labels take log10 units)
    assert [sh.y0 for sh in fig.layout.shapes] == [100.0]
    assert [(a.text, a.y) for a in fig.layout.annotations if a.text == "100×"] == [("100×", pytest.approx(2.0))]


def test_series_keep_one_recipe_per_line():
    def row(n, epochs, setup):
        return {"n": n, "params": "80k", "p": 78858, "method": "trak-1", "epochs": epochs, "setup_seconds": setup}

    # n = 4,000 was measured at 2 epochs (one run) and 1 epoch (another); 20k and 50k at 1 epoch
    doc = {"rows": [row(4000, 2, 17.0), row(4000, 1, 9.0), row(20000, 1, 45.0), row(50000, 1, 150.0)]}
    s = scale.scale_series(doc, y="setup_seconds")
    assert s == {"trak-1": ([4000, 20000, 50000], [9.0, 45.0, 150.0])}
    assert scale.scale_series(doc, y="setup_seconds", epochs=2) == {"trak-1": ([4000], [17.0])}
    # a TRAK-10 timed on a copied feature store has a per-query time but not TRAK-10's setup
    store = {"n": 20000, "params": "80k", "p": 78858, "method": "trak-10", "epochs": 1, "store_timing": True}
    doc["rows"].append(store | {"setup_seconds": 60.0, "seconds_per_query": 0.05})
    assert "trak-10" not in scale.scale_series(doc, y="setup_seconds")
    assert scale.scale_series(doc)["trak-10"] == ([20000], [50.0])
    # the same cell measured again in a later run: one point, the newer run's
    doc["rows"].append(row(20000, 1, 40.0) | {"run": 3})
    assert scale.scale_series(doc, y="setup_seconds")["trak-1"] == ([4000, 20000, 50000], [9.0, 40.0, 150.0])
    # time per query does not grow with the epochs: one point per n, the newest run's
    for r, ms in zip(doc["rows"][:4], (4.0, 3.0, 5.0, 7.0)):
        r["seconds_per_query"] = ms / 1000
    doc["rows"][0]["run"] = 1  # the 2-epoch n = 4,000 cell is the newer run
    assert scale.scale_series(doc)["trak-1"] == ([4000, 20000, 50000], [4.0, 5.0, 7.0])
