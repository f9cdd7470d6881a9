"""Cost: the forward-only readout against TRAK, measured live on this machine."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import streamlit as st

from attrcore import app as sup
from attrcore import plots
from pages import _shared as sh

run, version = sh.run_page(
    __file__,
    "Cost on this machine",
    "Measures, on this computer, how long an explanation takes with attrcore's forward-only "
    "readout and with TRAK, how much setup each needs, after how many queries the setup pays off, "
    "and how much memory each training source costs.",
    caption="What does an explanation cost? Time per query, one-off setup, and memory per source, "
    "for the forward-only readout and for TRAK, measured here in one go.",
)
s = sh.store()
per_example = run.sources_kind == "example"
trak_note = sup.baselines_available()
result = sup.load_cost(s, run.name, version)

c1, c2 = st.columns([1, 3])
label = "Re-measure on this machine" if result else "Measure on this machine"
go = c1.button(label, type="primary", key="cost_go", icon=":material/timer:")
c2.caption(
    "Times the readout for 1 to 256 queries (per example and grouped by class)"
    + ("" if trak_note else " and TRAK with one model (featurizing the training set, then scoring)")
    + ". Takes from a few seconds to a minute; the result is stored with a description of the machine."
)
if trak_note:
    st.info(f"TRAK: {trak_note} Only the forward-only readout is measured.")
if go:
    if not per_example:
        st.error(
            "The cost comparison needs a run with one source per example (it also derives the "
            "grouped-by-class numbers from it); pick such a run in the sidebar."
        )
        st.stop()
    outcome = sh.job(
        lambda progress: sup.save_cost(
            s, run.name, version, sup.measure_cost(run, with_trak=trak_note is None, progress=progress.say)
        ),
        start="measuring…",
        label="The measurement",
    )
    if not outcome.ok:
        st.stop()
    result = sup.load_cost(s, run.name, version)

sh.explain(
    "How to read these numbers",
    """
- **Setup** is paid once per trained model: attrcore simulates every source's effect
  during training; TRAK computes and projects a gradient for every training example.
- **Per query**, attrcore needs only forward passes through the network with each source's
  simulated change applied (batched), while TRAK needs a backward pass, a projection and a
  product with every training example's features, per model in its ensemble.
- The **break-even** point is the number of queries after which the cheaper per-query method
  has paid back a larger setup. For a model that serves many explanations, per-query cost
  dominates.
- **Memory per source**: attrcore stores one parameter-sized change per source; grouping
  sources (per class, per publisher, …) divides the total by the group size.
""",
)
sh.explain("Where does the horizon K come in?", sh.HORIZON_TEXT)

if not result:
    st.info("No measurement for this run yet: press the button above.")
    st.stop()

rank_note = f", compressed rank {result['forward_rank']}" if result.get("forward_rank") else ", dense"
methods = [
    ("forward", f"forward-only{rank_note}, {result.get('forward_sources', '?')} sources (per example)"),
    ("grouped", f"forward-only, {result.get('grouped_sources', '?')} sources (per class)"),
    ("compressed", f"forward-only, compressed rank {result.get('compressed_rank', '?')} (per example)"),
    ("trak", f"TRAK, 1 model, projection {result.get('trak_proj_dim', '?')}"),
]
methods = [(m, lbl) for m, lbl in methods if f"{m}_n" in result]
per_query = {
    lbl: (result[f"{m}_n"], [t / n for t, n in zip(result[f"{m}_seconds"], result[f"{m}_n"])]) for m, lbl in methods
}
summary = []
for m, lbl in methods:
    n, t = np.asarray(result[f"{m}_n"], float), np.asarray(result[f"{m}_seconds"], float)
    per_q = float(t[-1] / n[-1])  # the largest batch: the steady-state cost
    summary.append(
        {
            "method": lbl,
            "setup s": float(result[f"{m}_setup"]),
            "ms per query": 1000 * per_q,
            "KiB per source": float(result[f"{m}_bytes"]) / 1024,
            "total MB": float(result[f"{m}_bytes"]) * float(result[f"{m}_sources"]) / 1e6,
        }
    )
table = pd.DataFrame(summary)

breakeven = None
if "trak_n" in result:
    f, t = summary[0], summary[-1]
    breakeven = sup.breakeven_queries(f["setup s"], f["ms per query"] / 1000, t["setup s"], t["ms per query"] / 1000)
c1, c2, c3 = st.columns(3)
c1.metric("forward-only, ms per query", f"{summary[0]['ms per query']:.3f}")
if breakeven is not None:
    ratio = summary[-1]["ms per query"] / max(summary[0]["ms per query"], 1e-12)
    c2.metric(
        "TRAK, ms per query",
        f"{summary[-1]['ms per query']:.3f}",
        delta=sup.speed_ratio_text(ratio),
        delta_color="off",
        delta_arrow="off",
    )
    c3.metric(
        "break-even (queries)",
        "from the first" if breakeven == 0 else ("never" if not np.isfinite(breakeven) else f"{breakeven:,.0f}"),
    )

c1, c2 = st.columns(2)
with c1:
    sh.chart(plots.cost_curves(per_query, title="Time per query against batch size (log-log)"), "cost_curves")
with c2:
    qs = np.logspace(0, 5, 30)
    totals = {
        row["method"]: (qs.tolist(), (row["setup s"] + qs * row["ms per query"] / 1000).tolist()) for row in summary
    }
    sh.chart(
        plots.cost_curves(
            totals,
            y_title="setup + queries, seconds",
            breakeven=breakeven,
            markers=False,
            title="Total cost against number of queries",
        ),
        "cost_totals",
    )
st.dataframe(
    table,
    hide_index=True,
    column_config={
        "setup s": st.column_config.NumberColumn(format="%.2f"),
        "ms per query": st.column_config.NumberColumn(format="%.4f"),
        "KiB per source": st.column_config.NumberColumn(format="%.1f"),
        "total MB": st.column_config.NumberColumn(format="%.2f"),
    },
)
machine = result.get("machine", {})
when = datetime.fromtimestamp(result.get("measured_at", 0)).strftime("%Y-%m-%d %H:%M")
st.caption(
    f"Measured {when} on {machine.get('system', '?')}, {machine.get('processor', '?')}, "
    f"{machine.get('cpu_count', '?')} CPUs ({machine.get('torch_threads', '?')} torch threads), "
    f"torch {machine.get('torch', '?')}, Python {machine.get('python', '?')}. "
    "Setup: simulation during training (forward-only; the grouped numbers reuse the per-example "
    "simulation, a run trained with grouped sources simulates less), featurizing (TRAK)."
)
short = [
    r["method"].split(",")[0]
    + (" (class)" if "class" in r["method"] else "")
    + (" (r)" if "rank" in r["method"] else "")
    for r in summary
]
c1, c2 = st.columns(2)
with c1:
    sh.chart(plots.memory_bars(short, [r["KiB per source"] * 1024 for r in summary]), "cost_memory")
with c2:
    sh.chart(
        plots.memory_bars(short, [r["total MB"] * 1e6 for r in summary], title="memory for all sources", unit="MB"),
        "cost_memory_total",
    )

# the scaling benchmark (benchmarks/scale_bench.py): committed figures, not measured here
from attrcore.app import scale as scale_bench  # noqa: E402 - the section's own helper

doc = scale_bench.scale_report()
if doc is not None:
    st.subheader("Scaling benchmark (committed figures)")
    c1, c2 = st.columns(2)
    with c1:
        sh.chart(plots.scaling_lines(scale_bench.scale_series(doc)), "scale_query")
    with c2:
        sh.chart(
            plots.scaling_lines(
                scale_bench.scale_series(doc, y="setup_seconds"), y_title="setup seconds", title="Setup against n"
            ),
            "scale_setup",
        )
    c3, c4 = st.columns(2)
    with c3:
        sh.chart(
            plots.scaling_lines(
                scale_bench.scale_series(doc, against="p"), x_title="parameters p", title="Time per query against p"
            ),
            "scale_query_p",
        )
    with c4:
        sh.chart(plots.speedup_bars(scale_bench.speedups(doc), targets={"100×": 100, "10×": 10}), "scale_speedup")
    cpu = scale_bench.speedups(doc, timing="cpu_seconds_per_query")
    if cpu:  # runs that recorded process CPU time, which the machine's other jobs do not inflate
        sh.chart(
            plots.speedup_bars(
                cpu, targets={"100×": 100, "10×": 10}, title="Time per query by CPU time: TRAK-10 ÷ method (same run)"
            ),
            "scale_speedup_cpu",
        )
    st.caption(
        f"From `{doc.get('command', 'benchmarks/scale_bench.py')}`, {doc.get('date', '?')}; "
        "table, recipes per cell, missing cells and fitted slopes in benchmarks/scale.md."
    )
