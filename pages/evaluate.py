"""Evaluate: LDS and leave-one-out ground truth by retraining, LDS per method, LDS curves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from attrcore import app as sup
from attrcore import plots
from pages import _shared as sh

# Benchmark reports (attrcore.evaluation.bench); ATTRCORE_BENCH_DIR points elsewhere.
BENCH_DIR = Path(os.environ.get("ATTRCORE_BENCH_DIR", Path(__file__).resolve().parents[1] / "benchmarks"))


LDS_TEXT = """
**LDS (linear datamodeling score)** tests attributions the way a scientist would: by
experiment. Train many models, each on a random half of the training data. For every such
model, the attributions *predict* the query's measurement by adding up the scores of the
examples that were kept. LDS is the rank correlation (Spearman) between those predictions
and the measurements of the actually retrained models, averaged over queries.

- **1** would mean the scores rank the subsets perfectly; **0** means no better than chance.
- The **noise ceiling** is how well one retrained model predicts the same subset retrained
  with another seed. Training is noisy, so no method can be expected to beat it by much.
- More subsets give a more precise LDS but cost one training each.
"""
LOO_TEXT = """
**Leave-one-out (LOO)** removes one source at a time, retrains, and compares the actual
change of the query's measurement with the score. Here the removed source keeps its place
in every mini-batch with weight zero and the seed is fixed, so the difference is the
source's effect and not reshuffling luck. Even so, single-example effects on a neural
network are tiny and noisy: the **seed agreement** column shows how well two seeds agree
with *each other*; when it is near zero, no method can correlate with LOO.
"""

run, version = sh.run_page(
    __file__,
    "Evaluate attributions",
    "Checks attributions against real retraining: LDS trains many models on random halves "
    "of the data and asks whether the scores predict their outputs; leave-one-out removes single "
    "sources. Also draws how LDS changes with the horizon K, the ensemble size and TRAK's settings.",
    caption="Do the scores predict what really happens when the model is retrained without some of its data?",
)
H = sh.home()
ds = sh.dataset_of(run)
missing = sup.evaluation_available()
if missing:
    st.info(f"Evaluation by retraining: {missing}")
    sh.explain("What is LDS?", LDS_TEXT)
    st.stop()
no_queries = sup.evaluation_queries_missing(run)
if no_queries:
    st.info(no_queries, icon=":material/info:")
    sh.explain("What is LDS?", LDS_TEXT)
    st.stop()

# ----------------------------------------------------------------------------- ground truth
st.subheader("1 · Ground truth by retraining")
c1, c2, c3, c4, c5 = st.columns(5)
n_subsets = c1.number_input("subsets M", 2, 500, 20, key="eval_subsets", help="models retrained on random subsets")
fraction = c2.slider("fraction kept", 0.1, 0.9, 0.5, step=0.1, key="eval_fraction")
n_queries = c3.number_input("queries", 1, ds.n_test, min(50, ds.n_test), key="eval_queries")
ceiling = c4.selectbox("noise-ceiling seeds", [0, 1, 2], index=1, key="eval_ceiling")
n_jobs = c5.selectbox(
    "parallel workers", [1, 2, -1], key="eval_jobs", format_func=lambda j: "all cores" if j == -1 else str(j)
)
measure = st.session_state.get("explore_measure", "margin")
settings = sup.LDSSettings(
    n_subsets=int(n_subsets),
    fraction=float(fraction),
    n_queries=int(n_queries),
    ceiling_seeds=int(ceiling),
    n_jobs=int(n_jobs),
    measure=measure,
)
train_s = float(run.timings.get("train_seconds", 0.0) - run.timings.get("simulate_seconds", 0.0))
n_train_runs = settings.n_subsets * (1 + settings.ceiling_seeds)
known = sup.truth_known(sh.store(), sup.LDS_DONE_KIND, settings, run.name, version)
if not known:
    st.markdown(
        f"This needs **{n_train_runs} trainings** of about {max(train_s * fraction, 0.1):.1f} s each "
        f"(measurement: {measure}). Finished trainings are stored: stopping and restarting resumes."
    )
    if st.button("Compute the LDS ground truth", type="primary", key="eval_lds_go", icon=":material/play_arrow:"):
        sh.job(
            lambda progress: sup.lds_truth(sh.store(), run, version, settings, progress=progress),
            start="retraining…",
            text=lambda p: f"retrained {p.done} of {p.total} models",
            rerun=True,
        )
    sh.explain("What is LDS?", LDS_TEXT)
    st.stop()

gt = sh.lds_gt(H, run.name, version, settings)
ceil = float(np.nanmean(gt.ceiling())) if settings.ceiling_seeds else float("nan")
st.success(
    f"Ground truth: {gt.n_subsets} subsets × {gt.outputs.shape[1]} queries"
    + (f", seed-noise ceiling {ceil:.3f}" if np.isfinite(ceil) else "")
    + "."
)

# ----------------------------------------------------------------------------- LDS per method
st.subheader("2 · LDS per method")
rank_tag = f", rank {run.responses.rank}" if run.compressed else ""
# the first queries only, while their score matrix stays small (all of them on runs of the usual size)
n_eval = sup.comparison_queries(len(sup.query_pool(sh.dataset_of(run))[0]), run.n_sources)
methods = {
    f"forward-only (this run, K={run.simulation.horizon_label}{rank_tag})": sh.scores(
        H, run.name, version, measure, n_eval
    )
}
variant = sh.compressed_scores(H, run.name, version, measure)  # a dense run: its rank-256 compression too
if variant is not None:
    methods[f"forward-only (this run, compressed to rank {variant[0]})"] = variant[1]
curve_runs = {}
for name in sup.comparable_runs(sh.store(), run):
    v = sup.run_version(sh.store(), name)
    other = sh.load_run(H, name, v)
    if sup.same_training(run, other):
        label = f"forward-only ({name}, {other.simulation.scheme} K={other.simulation.horizon_label})"
        methods[label] = sh.scores(H, name, v, measure, n_eval)
        curve_runs[label] = other
if sup.baselines_available() is None:
    for a in sup.stored_baselines(sh.store(), run.name, version):
        key = a["key"]
        if key.get("measure") == measure:
            label = sup.BASELINES.get(key["method"], key["method"])
            if key.get("models", 1) > 1:
                label = f"TRAK ({key['models']} models)" if key["method"] == "trak" else f"{label} ({key['models']})"
            methods[label] = sh.cached_baseline(H, run.name, version, key["method"], measure, key.get("models", 1))
else:
    st.caption("Baselines (TRAK, influence functions, TracIn): " + sup.baselines_available())
rows = sh.lds_rows(H, run.name, version, settings, tuple(methods), methods)
table = pd.DataFrame([{k: v for k, v in r.items() if k not in ("per_query", "queries")} for r in rows])
c1, c2 = st.columns([1, 1])
with c1:
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "LDS": st.column_config.NumberColumn(format="%.3f"),
            "± s.e.": st.column_config.NumberColumn(format="%.3f"),
        },
    )
    st.caption(
        "Add methods: other runs with the same training (another horizon K) appear here "
        "automatically; baselines computed on **Explore › Compare methods** too."
    )
with c2:
    short = [m.replace("forward-only ", "fwd ") for m in table["method"]]
    sh.chart(plots.lds_bars(short, table["LDS"].tolist(), table["± s.e."].fillna(0).tolist(), ceil), "eval_bars")

# ----------------------------------------------------------------------------- LDS curves
st.subheader("3 · LDS curves")
own = {}
for label, other in curve_runs.items():
    own.setdefault(other.simulation.scheme, []).append(
        (sup.horizon_x(other.simulation.horizon_label), next(r["LDS"] for r in rows if r["method"] == label))
    )
own.setdefault(run.simulation.scheme, []).append((sup.horizon_x(run.simulation.horizon_label), rows[0]["LDS"]))
own_series = {f"{scheme} (your runs)": tuple(map(list, zip(*sorted(p)))) for scheme, p in own.items()}
if sum(len(v[0]) for v in own_series.values()) > 1:
    xs = sorted({x for v in own_series.values() for x in v[0]})
    sh.chart(
        plots.lds_curves(
            own_series,
            "horizon K",
            log_x=False,
            ceiling=ceil,
            title="LDS against K: your runs",
            x_labels={x: sup.horizon_tick(x) for x in xs},
        ),
        "eval_own_curve",
    )
else:
    st.caption(
        "Train the same model with other horizons K (Train page, same settings, another K) to see "
        "LDS against K for your own runs here."
    )
cdocs = sup.rank_curve_docs(sup.compress_docs(str(BENCH_DIR)), run.config["data"].get("source", ""))
if cdocs:
    labels = [sup.rank_curve_label(d) for d in cdocs]
    cdoc = cdocs[labels.index(st.selectbox("Compression report", labels, key="eval_rank_doc"))]
    series, refs = sup.rank_curves(cdoc)
    sh.chart(
        plots.lds_against_rank(
            series, refs, title=f"Compressed responses: LDS against the rank r ({cdoc['task']}, K={cdoc['horizon']})"
        ),
        "eval_rank_curve",
    )
    st.caption(
        f"From `benchmarks/{cdoc['_file']}` (random-seed LDS; `compress_bench.py` or `query_compress_bench.py`): "
        "every factorisation at each rank r, against the dense responses and TRAK measured in the same run. "
        "Your run's task comes first in the list; the other reports are there to compare."
    )
docs = sh.bench_docs(str(BENCH_DIR))
if not docs:
    st.info(
        "No benchmark report found in `benchmarks/`. The benchmark (`attrcore.evaluation.bench.run_bench`) "
        "measures LDS against K, ensemble size and TRAK's settings on the reference tasks; its "
        "JSON reports are drawn here when present."
    )
else:
    doc_name = st.selectbox("Benchmark report", [d["_file"] for d in docs], key="eval_bench")
    doc = next(d for d in docs if d["_file"] == doc_name)
    curves = sup.bench_curves(doc)
    gtd = doc.get("ground_truth", {}).get("fixed-seed", {})
    bceil = (gtd.get("ceiling") or {}).get("mean")
    st.caption(
        f"{doc.get('task')} · {doc.get('created', '')} · {doc.get('data', {}).get('n_train', '?')} training "
        f"examples · machine: {doc.get('machine', {}).get('platform', '?')}"
    )
    c1, c2, c3 = st.columns(3)
    with c1:
        hs = curves["horizon"]
        xs = sorted({x for v in hs.values() for x in v[0]})
        sh.chart(
            plots.lds_curves(
                hs,
                "horizon K (log)",
                log_x=True,
                ceiling=bceil,
                title="LDS against K",
                x_labels={x: sup.horizon_tick(x) for x in xs if x > 0},
            ),
            "eval_bench_k",
        )
    with c2:
        if curves["ensemble"]:
            sh.chart(
                plots.lds_curves(
                    curves["ensemble"], "models averaged", ceiling=bceil, title="LDS against ensemble size"
                ),
                "eval_bench_ens",
            )
        else:
            st.caption("No ensemble rows in this report.")
    with c3:
        if curves["trak_models"]:
            sh.chart(
                plots.lds_curves(
                    curves["trak_models"], "TRAK models M", ceiling=bceil, title="TRAK: LDS against models"
                ),
                "eval_bench_trak_m",
            )
            sh.chart(
                plots.lds_curves(
                    curves["trak_proj"],
                    "projection dimension",
                    log_x=True,
                    ceiling=bceil,
                    title="TRAK: LDS against projection size",
                ),
                "eval_bench_trak_k",
            )
        else:
            st.caption("No TRAK rows in this report.")
    protos = sup.bench_protocols(doc)
    if protos:
        proto = st.radio("LDS protocol", protos, horizontal=True, key="eval_bench_proto")
        pts = sup.bench_time_points(doc, proto)
        pceil = ((doc.get("ground_truth", {}).get(proto) or {}).get("ceiling") or {}).get("mean")
        sh.chart(
            plots.lds_vs_time(
                pts["labels"],
                pts["seconds"],
                pts["lds"],
                pts["families"],
                pts["errors"],
                pceil,
                title=f"LDS ({proto}) against time, every setting of the report",
            ),
            "eval_bench_time",
        )

# ----------------------------------------------------------------------------- per query
st.subheader("4 · One query up close")
c1, c2 = st.columns([1, 2])
with c1:
    method = st.selectbox("Method", list(methods), key="eval_pq_method")
    Qn = gt.outputs.shape[1]
    q = int(st.number_input(f"query (0–{Qn - 1})", 0, Qn - 1, 0, key="eval_pq_query"))
    row = next(r for r in rows if r["method"] == method)
    st.metric("LDS of this query", f"{row['per_query'][q]:.3f}")
    st.caption(
        f"true {ds.class_names[ds.y_test[q]]}. Each point is one retrained model; x: what the scores "
        "predict (sum of the kept sources' scores), y: the measurement it actually gives."
    )
with c2:
    pred = sup.subset_predictions(gt, methods[method][q])
    sh.chart(
        plots.predicted_vs_actual(pred, gt.outputs[:, q], title=f"Query {q}: predicted against actual"), "eval_pq_fig"
    )
sh.explain("What is LDS, and what is the noise ceiling?", LDS_TEXT)

# ----------------------------------------------------------------------------- LOO
st.subheader("5 · Leave-one-out")
c1, c2, c3 = st.columns(3)
loo = sup.LOOSettings(
    n_sources=int(c1.number_input("sources removed", 2, 200, 10, key="eval_loo_k")),
    n_seeds=int(c2.number_input("seeds", 1, 5, 2, key="eval_loo_seeds")),
    n_queries=int(n_queries),
    n_jobs=int(n_jobs),
    measure=measure,
)
c3.markdown(f"Needs {loo.n_seeds * (loo.n_sources + 1)} trainings.")
if not sup.truth_known(sh.store(), sup.LOO_DONE_KIND, loo, run.name, version):
    if st.button("Compute leave-one-out effects", key="eval_loo_go"):
        sh.job(
            lambda progress: sup.loo_truth(sh.store(), run, version, loo, progress=progress),
            start="retraining…",
            text=lambda p: f"retrained {p.done} of {p.total}",
            rerun=True,
        )
else:
    lg = sh.loo_gt(H, run.name, version, loo)
    sa = lg.seed_agreement()
    agree = float(np.nanmean(sa)) if np.isfinite(sa).any() else float("nan")
    loo_rows = []
    for name, S in methods.items():
        c = lg.score(np.asarray(S)[: lg.full_outputs.shape[1]])
        loo_rows.append(
            {"method": name, "Pearson": float(np.nanmean(c.pearson)), "Spearman": float(np.nanmean(c.spearman))}
        )
    st.dataframe(pd.DataFrame(loo_rows), hide_index=True)
    st.caption(
        f"Seed agreement of the LOO effects themselves: {agree:.3f}"
        if np.isfinite(agree)
        else "Use two or more seeds to see how noisy the LOO effects are."
    )
sh.explain("What does leave-one-out measure?", LOO_TEXT)
