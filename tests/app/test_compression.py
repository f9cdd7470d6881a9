"""The app's compressed-responses view models and figure (no Streamlit): the Train page's
estimate, compressed variants of dense runs, the benchmark's LDS-vs-rank curves."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from torch.testing import assert_close

from attrcore import app as sup
from attrcore import fit, load_dataset, plots
from attrcore.config import SimulationConfig, TrainConfig


def test_the_estimate_names_the_representation_and_its_memory():
    ds = load_dataset("moons", n_samples=200)
    cfg = TrainConfig(epochs=3, batch_size=20)
    dense = sup.simulation_estimate(ds, (16,), cfg, SimulationConfig(rank=None))
    comp = sup.simulation_estimate(ds, (16,), cfg, SimulationConfig(rank=8))
    p, m = dense["p"], dense["m"]
    assert dense["rank"] is None and dense["stored_bytes"] == m * p * 4
    assert comp["rank"] == 8 and comp["stored_bytes"] == 8 * (p + m) * 4 and comp["dense_bytes"] == m * p * 4
    assert dense["fits"] and comp["fits"] and comp["seconds"] > 0
    assert "rank 8" in sup.estimate_text(comp) and "instead of" in sup.estimate_text(comp)
    auto = sup.simulation_estimate(ds, (16,), cfg, SimulationConfig())  # auto: tiny m → dense
    assert auto["rank"] is None and "auto" in auto["reason"]
    tight = sup.simulation_estimate(ds, (16,), cfg, SimulationConfig(rank=None, memory_budget_mb=0.001))
    assert not tight["fits"] and "refused" in sup.estimate_text(tight)
    none = sup.simulation_estimate(ds, (16,), cfg, SimulationConfig(scheme="none"))
    assert none["stored_bytes"] == 0 and "cannot attribute" in sup.estimate_text(none)


def test_a_compressed_variant_of_a_dense_run_scores_like_it_at_full_rank():
    ds = load_dataset("moons", n_samples=60)
    run = fit(
        ds, hidden=(6,), train_config=TrainConfig(epochs=2, batch_size=16), simulation=SimulationConfig(rank=None)
    )
    comp = sup.compressed_variant(run)  # rank 256 is capped at min(m, p)
    assert comp.compressed and comp.responses.rank == min(ds.n_train, run.mlp.n_params)
    assert comp.timings["compress_seconds"] >= 0
    assert_close(
        torch.from_numpy(comp.score(ds.X_test, ds.y_test)),
        torch.from_numpy(run.score(ds.X_test, ds.y_test)),
        rtol=1e-4,
        atol=1e-6,
    )
    assert sup.compressed_variant(comp) is None  # already compressed
    low = sup.compressed_variant(run, rank=4)
    assert low.responses.rank == 4 and low.bytes_per_source() < run.bytes_per_source()


def test_rank_curves_read_the_compression_report(tmp_path):
    lds = lambda v: {"random-seed": {"mean": v, "sem": 0.01, "n": 10}}  # noqa: E731
    doc = {
        "task": "digits-mlp",
        "horizon": "full",
        "protocols": ["random-seed"],
        "rows": [
            {"method": "dense, K=full", "kind": "dense", "lds": lds(0.5)},
            {"method": "compressed r=64", "kind": "compressed", "rank": 64, "lds": lds(0.4)},
            {"method": "compressed r=32", "kind": "compressed", "rank": 32, "lds": lds(0.3)},
            {"method": "truncated r=64 → 32", "kind": "truncated", "rank": 32, "lds": lds(0.35)},
            {"method": "TRAK-1, proj 512", "kind": "trak", "models": 1, "lds": lds(0.2)},
        ],
    }
    (tmp_path / "compress-digits-mlp.json").write_text(json.dumps(doc))
    (tmp_path / "digits-mlp.json").write_text(json.dumps({"task": "digits-mlp", "rows": []}))
    docs = sup.compress_docs(tmp_path)
    assert [d["_file"] for d in docs] == ["compress-digits-mlp.json"]
    assert [d["_file"] for d in sup.bench_docs(tmp_path)] == ["digits-mlp.json"]  # kept apart
    series, refs = sup.rank_curves(docs[0])
    assert series["compressed (rank-r run)"] == ([32, 64], [0.3, 0.4])
    assert series["truncated from the largest rank"] == ([32], [0.35])
    assert refs == {"dense, K=full": 0.5, "TRAK-1, proj 512": 0.2}
    fig = plots.lds_against_rank(series, refs)
    assert isinstance(fig, go.Figure) and len(fig.data) == 2
    assert [a.text for a in fig.layout.annotations] == ["dense, K=full 0.500", "TRAK-1, proj 512 0.200"]
    assert fig.layout.xaxis.type == "log"
    assert np.allclose(fig.data[0].x, [32, 64])


@pytest.mark.parametrize("refs", [None, {"dense": float("nan")}])
def test_lds_against_rank_without_references(refs):
    fig = plots.lds_against_rank({"a": ([1, 2], [0.1, 0.2])}, refs)
    assert len(fig.layout.annotations) == 0


def test_rank_curves_read_the_query_aware_report_first(tmp_path):
    lds = lambda v: {"random-seed": {"mean": v, "sem": 0.01, "n": 10}}  # noqa: E731
    doc = {
        "task": "mnist1d-mlp",
        "horizon": "full",
        "protocols": ["random-seed"],
        "rows": [
            {"method": "dense", "kind": "dense", "lds": lds(0.4)},
            {"method": "query-aware r=64", "kind": "query-aware", "rank": 64, "lds": lds(0.2)},
            {"method": "query-aware r=32", "kind": "query-aware", "rank": 32, "lds": lds(0.1)},
            {"method": "svd r=32", "kind": "svd", "rank": 32, "lds": lds(0.05)},
            {"method": "TRAK-10, proj 512", "kind": "trak", "models": 10, "lds": lds(0.27)},
        ],
    }
    (tmp_path / "query-compress-mnist1d-mlp.json").write_text(json.dumps(doc))
    (tmp_path / "compress-mnist1d-mlp.json").write_text(json.dumps(dict(doc, rows=[])))
    docs = sup.compress_docs(tmp_path)
    assert [d["_file"] for d in docs] == ["query-compress-mnist1d-mlp.json", "compress-mnist1d-mlp.json"]
    series, refs = sup.rank_curves(docs[0])
    assert series == {"query-aware": ([32, 64], [0.1, 0.2]), "svd of Δ": ([32], [0.05])}
    assert refs == {"dense": 0.4, "TRAK-10, proj 512": 0.27}


def test_rank_curve_docs_put_the_runs_task_first_then_the_longest_curve(tmp_path):
    lds = lambda v: {"random-seed": {"mean": v, "sem": 0.01, "n": 10}}  # noqa: E731

    def report(name, task, ranks):
        rows = [{"method": "dense", "kind": "dense", "lds": lds(0.4)}]
        rows += [{"method": f"query-aware r={r}", "kind": "query-aware", "rank": r, "lds": lds(0.1)} for r in ranks]
        (tmp_path / name).write_text(json.dumps({"task": task, "horizon": "4", "rows": rows}))

    report("query-compress-mnist1d-mlp-a.json", "mnist1d-mlp", [256, 384])
    report("query-compress-mnist1d-mlp-b.json", "mnist1d-mlp", [32, 64, 128])
    report("query-compress-mnist1d-mlp-empty.json", "mnist1d-mlp", [])  # no curve: left out
    report("compress-digits-mlp.json", "digits-mlp", [32, 64])
    docs = sup.compress_docs(tmp_path)
    order = lambda source: [d["_file"] for d in sup.rank_curve_docs(docs, source)]  # noqa: E731
    assert order("digits") == [
        "compress-digits-mlp.json",
        "query-compress-mnist1d-mlp-b.json",
        "query-compress-mnist1d-mlp-a.json",
    ]
    assert order("mnist1d")[:2] == ["query-compress-mnist1d-mlp-b.json", "query-compress-mnist1d-mlp-a.json"]
    assert sup.rank_curve_label(docs[0]) == "mnist1d-mlp, horizon 4 (query-compress-mnist1d-mlp-a.json)"
