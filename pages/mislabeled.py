"""Mislabeled data: rank every training example by how suspicious its label is, review the
top of the list, mark, retrain with the fixes, and export the cleaned data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from attrcore import AttrcoreError, TrainConfig, plots
from attrcore import app as sup
from attrcore import mislabel as ml
from pages import _shared as sh

sh.page(
    __file__,
    "Mislabeled data",
    "Which training labels are wrong? Every training example is ranked by how suspicious it is, "
    "with attribution signals (the example as its own query) and the simple controls practitioners use.",
)
S = sh.store()
H = sh.home()


@st.cache_data(max_entries=64, show_spinner=False)
def cached_signal(home: str, name: str, version: str, signal: str) -> ml.SignalResult:
    return sup.signal_result(sh._store(home), sh.load_run(home, name, version), version, signal)


@st.cache_data(max_entries=8, show_spinner=False)
def train_predictions(home: str, name: str, version: str) -> np.ndarray:
    run = sh.load_run(home, name, version)
    return sup.predict(run, sh.dataset_of(run).X_train).argmax(1)


# ----------------------------------------------------------------------------- 0 · a noisy run
runs = sup.mislabel_runs(S)
with st.expander("Make a run with injected label noise", expanded=not runs, icon=":material/shuffle:"):
    c1, c2, c3 = st.columns(3)
    source = c1.selectbox("Dataset", ["digits", "breast_cancer", "mnist1d", "moons"], key="ml_source")
    kind = c2.radio("Noise", ["uniform", "class-conditional"], key="ml_kind", horizontal=True)
    rate = c3.slider(
        "Rate",
        0.0,
        0.5,
        0.1 if kind == "uniform" else 0.4,
        0.05,
        key=f"ml_rate_{kind}",
        help="uniform: the fraction of all labels flipped; class-conditional: the fraction of "
        "each source class relabelled as its partner.",
    )
    c1, c2, c3 = st.columns(3)
    pairs = c1.text_input(
        "Confusion pairs",
        "7:1,2:5",
        key="ml_pairs",
        disabled=kind == "uniform",
        help="SOURCE:TARGET pairs, e.g. 7:1,2:5 (examples of class 7 get label 1).",
    )
    seed = int(c2.number_input("Noise seed", 0, 10_000, 0, key="ml_seed"))
    epochs = int(c3.number_input("Epochs", 1, 200, 30, key="ml_epochs"))
    name = st.text_input(
        "Run name", f"{source}-noisy-{'u' if kind == 'uniform' else 'cc'}{rate:g}-s{seed}", key="ml_name"
    )
    overwrite = st.checkbox("overwrite a run of that name", key="ml_overwrite")
    st.caption(
        "Trains the digits preset's recipe (MLP with 128 hidden units, SGD lr 0.1, batch 64) with the "
        "forward-only responses at horizon K = 0, the setting that ranked flipped labels best in the "
        "benchmark. Nothing is saved if training fails or you cancel it."
    )
    if st.button("Train the noisy run", type="primary", key="ml_train", icon=":material/rocket_launch:"):
        try:
            req = sup.NoisyRunRequest(
                source,
                rate,
                pairs if kind == "class-conditional" else None,
                seed,
                name,
                train=TrainConfig(epochs=epochs),
                overwrite=overwrite,
            )
        except AttrcoreError as err:
            st.error(str(err))
        else:
            st.session_state["ml_run"] = name
            sh.job(
                lambda progress: req.fit_and_save(S, progress=progress),
                start="Training…",
                cancel=("Cancel training", "ml_train_cancel"),
                label="Training",
                rerun=True,
            )

orphans = [r for r in ml.marked_runs(S) if not r["exists"]]
if orphans:  # marks outlive a deleted run (never lost silently); they cannot be applied
    st.sidebar.caption(
        "Marks kept for deleted runs (they cannot be applied to any data): "
        + ", ".join(f"{r['run']} ({r['marks']} mark(s))" for r in orphans)
        + ". Remove them with `python -m attrcore marks NAME --clear`."
    )

if not runs:
    st.info(
        "There is no run to rank yet: make one above (a minute on digits), or train one on **Train** "
        "with label noise and one source per example."
    )
    sh.explain(
        "What is this page for?",
        """
An example with a wrong label fights the rest of the data: the model has to bend to fit it.
Such examples tend to have a large influence on their *own* prediction (they are memorised).
This page ranks every training example by that **self-influence**, next to the simple checks
people already use (the training loss, the model's confidence, cleanlab), lets you review and
mark the most suspicious ones, retrains with your fixes and exports the cleaned data.
""",
        expanded=True,
    )
    st.stop()

current = st.session_state.get("ml_run")
name = st.sidebar.selectbox(
    "Run",
    runs,
    index=runs.index(current) if current in runs else 0,
    key="ml_run_pick",
    help="Runs with simulated responses and one source per example.",
)
st.session_state["ml_run"] = name
version = sup.run_version(S, name)
run = sh.load_run(H, name, version)
ds = sh.dataset_of(run)
names = ds.class_names
flags = sup.flipped_flags(ds)
spec = ds.spec
noise_text = (
    f"{len(ds.flipped)} of {ds.n_train} training labels were flipped on purpose "
    f"({'pairs ' + ', '.join(':'.join(p) for p in spec['noise_pairs']) + ' at ' if spec.get('noise_pairs') else ''}"
    f"rate {spec.get('label_noise', 0):g}), so every ranking can be scored against the truth."
    if len(ds.flipped)
    else "No label noise was injected in this run: the flips are unknown, so the rankings are shown without scores."
)
st.caption(f"Run **{name}** · {ds.name} · {ds.n_train} training examples · {noise_text}")

# ----------------------------------------------------------------------------- 1 · rank
st.subheader("1 · Rank every training example")
stored = sup.stored_signals(S, name, version)
titles = {s: ml.SIGNALS[s].title for s in ml.SIGNALS}
offered = sup.available_signals(run)
default = [s for s in offered if s in sup.QUICK_SIGNALS or s in stored]
chosen = st.multiselect(
    "Signals",
    offered,
    default=default,
    format_func=titles.get,
    key="ml_signals",
    help="Forward-only self-influence, the controls loss and confidence are instant; the trajectory "
    "signals (self-influence over the trajectory, loss over the trajectory, AUM) are recorded while a run "
    "made here trains (older runs replay their training once); TRAK, influence functions and cleanlab "
    "train or solve more and are computed on request.",
)
todo = [s for s in chosen if s not in stored and s not in sup.QUICK_SIGNALS]
if todo and st.button(f"Compute {', '.join(titles[s] for s in todo)}", key="ml_compute", icon=":material/calculate:"):

    def rank_all(progress) -> None:
        for s in todo:
            sup.signal_result(S, run, version, s, progress=progress)

    sh.job(rank_all, start="Ranking…", cancel=("Cancel", "ml_compute_cancel"), label="Ranking", rerun=True)
try:
    results = {s: cached_signal(H, name, version, s) for s in chosen if s in stored or s in sup.QUICK_SIGNALS}
except AttrcoreError as err:
    st.error(str(err))
    st.stop()
if todo:
    st.caption("Not computed yet: " + ", ".join(titles[s] for s in todo) + ".")
if not results:
    st.info("Pick at least one signal.")
    st.stop()
judged = sup.judge(results, ds)
table = pd.DataFrame(judged["rows"])[["signal", "auc", "ap", "found_at_10", "seconds", "setup_seconds"]]
table.columns = ["signal", "ROC-AUC", "average precision", "flips in top 10 %", "seconds", "+ extra models (s)"]
if judged["known"]:
    if judged["finding"]:
        st.warning(judged["finding"], icon=":material/info:")
    st.dataframe(
        table,
        hide_index=True,
        column_config={c: st.column_config.NumberColumn(format="%.3f") for c in table.columns[1:4]}
        | {c: st.column_config.NumberColumn(format="%.2f") for c in table.columns[4:]},
    )
    sh.chart(plots.found_vs_inspected(judged["curves"], len(ds.flipped) / ds.n_train, max_inspected=0.5), "ml_found")
else:
    st.dataframe(table[["signal", "seconds", "+ extra models (s)"]], hide_index=True)
sh.explain(
    "How to read this",
    """
Each signal gives every training example a **suspicion score**; the list is read from the
top. **Fraction found vs fraction inspected**: if you check the examples in that order, how
many of the flipped labels have you found after looking at 5 %, 10 %, … of the data? The
grey line is a perfect ranking, the dotted one a random order. **ROC-AUC** is the chance that
a flipped example ranks above a clean one (0.5 = random, 1 = perfect); **average precision**
rewards finding them at the very top.

- **forward-only self-influence**: how much the example's own weight in training moves its
  own loss (or margin), read out from this run's simulated responses with forward passes only.
- **TRAK / influence-function self-influence**: the same question answered by other
  attribution methods (TRAK trains extra models for its ensemble).
- **controls**: the training loss and the model's confidence in the given label, and
  **cleanlab**, the standard tool, on cross-validated probabilities of the same recipe.
  When a control wins, the page says so: it is a real finding.
""",
)

# ----------------------------------------------------------------------------- 2 · review
st.subheader("2 · Review the most suspicious examples")
marks = {}
try:
    marks = ml.load_marks(S, name)
except AttrcoreError as err:
    st.error(str(err))
c1, c2, c3 = st.columns(3)
rank_by = c1.selectbox("Rank by", list(results), format_func=titles.get, key="ml_rank_by")
k = c2.slider("How many", 6, 60, 24, 6, key="ml_k")
hide = c3.toggle("hide examples already marked", value=False, key="ml_hide")
reveal = c3.toggle("show the known flips", value=False, key="ml_reveal", disabled=not judged["known"])
scores = results[rank_by].scores
top = sup.most_suspicious(scores, k, set(marks) if hide else None)
pred = train_predictions(H, name, version)
mark_text = {i: (m.action if m.action != "relabel" else f"→ {names[m.label]}") for i, m in marks.items()}


def cell_title(i: int) -> str:
    flip = "!" if reveal and flags[i] else ""
    mark = f" [{mark_text[i]}]" if i in mark_text else ""
    return f"{names[ds.y_train[i]]}→{names[pred[i]]}{flip}{mark}"


sel_key = f"ml_pick_{name}_{rank_by}"
top_list = [int(i) for i in top]
if not top_list:
    st.info("Every example in this list is marked; turn off 'hide examples already marked'.")
    st.stop()
if st.session_state.get(sel_key) not in top_list:
    st.session_state[sel_key] = top_list[0]
if ds.kind in ("image", "signal"):
    grid_key = f"ml_grid_{name}_{rank_by}_{k}_{hide}"
    fig = plots.example_mosaic(
        ds.X_train[top],
        ds.kind,
        ds.image_shape,
        ids=top,
        cols=12,
        selectable=True,
        selected=st.session_state[sel_key],
        titles=[cell_title(i) for i in top],
        cell_px=75,
        border_colours=[plots.OPPONENT if reveal and flags[i] else None for i in top],
    )

    def picked_cell() -> None:
        i = sh.picked_id(st.session_state[grid_key])
        if i is not None:
            st.session_state[sel_key] = int(i)

    sh.chart(fig, grid_key, on_select=picked_cell, selection_mode="points")
    st.caption(
        "Most suspicious first. Title: given label → model's prediction"
        + (" (! = a known flip, red frame)" if reveal else "")
        + ". Click an example to review it."
    )
else:
    view = pd.DataFrame(ds.X_train[top], columns=list(ds.feature_names))
    view.insert(0, "score", scores[top])
    view.insert(0, "predicted", [names[pred[i]] for i in top])
    view.insert(0, "given", [names[ds.y_train[i]] for i in top])
    view.insert(0, "index", top)
    if reveal:
        view.insert(1, "flipped", flags[top])
    st.dataframe(view, hide_index=True, height=260)
i = int(
    st.selectbox(
        "Example",
        top_list,
        key=sel_key,
        format_func=lambda j: (
            f"#{j} · given {names[ds.y_train[j]]} · predicted {names[pred[j]]} · "
            f"score {scores[j]:+.3g}{' · ' + mark_text[j] if j in mark_text else ''}"
        ),
    )
)
c1, c2 = st.columns([1, 2])
with c1:
    if ds.kind in ("image", "signal"):
        sh.chart(plots.example_mosaic(ds.X_train[[i]], ds.kind, ds.image_shape, cols=1, cell_px=170), f"ml_one_{i}")
    else:
        st.dataframe(
            pd.DataFrame({"feature": ds.feature_names, "value": ds.X_train[i]}),
            hide_index=True,
            height=min(300, 35 * (ds.n_features + 1) + 3),
        )
with c2:
    probs = sup.predict(run, ds.X_train[[i]])[0]
    st.markdown(
        f"Given label **{names[ds.y_train[i]]}**, the model predicts **{names[pred[i]]}** "
        f"({probs[pred[i]]:.1%}; {probs[ds.y_train[i]]:.1%} for the given label). "
        f"{titles[rank_by]}: **{scores[i]:+.3g}** (rank {int((scores > scores[i]).sum()) + 1})."
    )
    if reveal and flags[i]:
        st.markdown(f"This label was flipped on purpose: the clean label is **{names[ds.y_train_clean[i]]}**.")
    b1, b2, b3, b4 = st.columns([2, 1, 1, 1])
    others = [c for c in range(len(names)) if c != ds.y_train[i]]
    default_to = int(pred[i]) if pred[i] != ds.y_train[i] else others[0]
    to = b1.selectbox(
        "relabel to",
        others,
        index=others.index(default_to),
        format_func=lambda c: names[c],
        key=f"ml_to_{i}",
        label_visibility="collapsed",
    )
    new = None
    if b2.button(f"Relabel to {names[to]}", key="ml_mark_relabel"):
        new = ml.Mark(i, "relabel", int(to))
    if b3.button("Remove", key="ml_mark_remove"):
        new = ml.Mark(i, "remove")
    if b4.button("Keep", key="ml_mark_keep"):
        new = ml.Mark(i, "keep")
    if new is not None:
        try:
            ml.set_marks(S, name, [new])
        except AttrcoreError as err:
            st.error(str(err))
        else:
            st.rerun()
    with st.popover("Proponents and opponents", icon=":material/compare_arrows:"):
        row = sup.influence_row(run, i)
        row[i] = 0.0  # its own self-influence is the score above
        pos, neg = sup.top_k(row, 8)
        for title_, idx, colour in (
            ("pushed its margin up", pos, plots.PROPONENT),
            ("pushed it down", neg, plots.OPPONENT),
        ):
            st.markdown(f"**{title_}**")
            if ds.kind in ("image", "signal"):
                sh.chart(
                    plots.example_mosaic(
                        ds.X_train[idx],
                        ds.kind,
                        ds.image_shape,
                        cols=8,
                        cell_px=60,
                        titles=[f"{names[ds.y_train[j]]} · {row[j]:+.2g}" for j in idx],
                        border_colours=[colour] * len(idx),
                    ),
                    f"ml_po_{title_}_{i}",
                )
            else:
                st.dataframe(
                    pd.DataFrame({"index": idx, "label": [names[ds.y_train[j]] for j in idx], "score": row[idx]}),
                    hide_index=True,
                )

if marks:
    st.markdown(f"**{len(marks)} mark(s)** (stored with the run; they survive a restart)")
    st.dataframe(ml.marks_to_frame(marks, names), hide_index=True, height=min(240, 35 * (len(marks) + 1) + 3))
    if st.button("Clear all marks", key="ml_clear", icon=":material/delete:"):
        ml.clear_marks(S, name)
        st.rerun()

# ----------------------------------------------------------------------------- 3 · fix
st.subheader("3 · Apply the marks and retrain")
c1, c2, c3 = st.columns(3)
frac = c1.slider("Fix the top (%)", 5, 50, 15, 5, key="ml_frac", help="Marks the top of the ranking in one go.") / 100
how_options = (["oracle"] if judged["known"] else []) + ["predicted", "remove"]
how = c2.selectbox(
    "as",
    how_options,
    key="ml_how",
    format_func={
        "oracle": "known flips back to their clean label",
        "predicted": "relabel to the model's prediction",
        "remove": "remove them",
    }.get,
)
if c3.button(f"Mark the top {frac:.0%} by {titles[rank_by].split(' (')[0]}", key="ml_fix_top"):
    ml.set_marks(S, name, ml.fix_top(scores, frac, ds, how=how, predictions=pred).values())
    st.rerun()
result = sup.stored_retrain(S, name, version, marks) if marks else None
if (
    marks
    and result is None
    and st.button("Apply the marks and retrain", type="primary", key="ml_retrain", icon=":material/model_training:")
):
    outcome = sh.job(
        lambda progress: sup.retrain_result(S, run, version, marks, progress=progress),
        start="Retraining…",
        cancel=("Cancel", "ml_retrain_cancel"),
        label="Retraining",
    )
    if outcome.ok:
        result = outcome.value
    else:
        st.caption("Your marks are kept.")
if result is not None:
    c1, c2 = st.columns([2, 3])
    with c1:
        sh.chart(plots.accuracy_bars(result["before"], result["after"], result["clean"]), "ml_acc")
    with c2:
        st.metric(
            "test accuracy after the fixes",
            f"{result['after']:.1%}",
            delta=f"{result['after'] - result['before']:+.1%}",
        )
        st.markdown(
            f"{result['n_relabelled']} relabelled, {result['n_removed']} removed, retrained with the same "
            "recipe and seed."
            + (
                ""
                if result["recovered"] is None
                else f" That closes **{result['recovered']:.0%}** of the gap to the model trained on the clean "
                f"labels ({result['clean']:.1%}); {result['flips_fixed']} of {result['n_flipped']} "
                "flips were fixed."
            )
        )
elif not marks:
    st.caption("Mark examples above (or use 'Mark the top …') to retrain with the fixes.")

# ----------------------------------------------------------------------------- 4 · export
st.subheader("4 · Export the cleaned data")
try:
    cleaned = ml.apply_marks(ds, marks)
except AttrcoreError as err:
    st.error(str(err))
else:
    c1, c2, c3 = st.columns(3)
    c1.download_button(
        "CSV",
        ml.export_bytes(cleaned, "csv"),
        f"{name}-cleaned.csv",
        "text/csv",
        key="ml_csv",
        icon=":material/download:",
    )
    c2.download_button(
        "NPZ",
        ml.export_bytes(cleaned, "npz"),
        f"{name}-cleaned.npz",
        "application/octet-stream",
        key="ml_npz",
        icon=":material/download:",
    )
    c3.caption(
        f"{len(cleaned.y)} examples: {cleaned.n_relabelled} relabelled, {cleaned.n_removed} removed; "
        "the notes given_label, change and train_row say what happened to each row. The file trains as it "
        f"is (Train page, or `python -m attrcore train --train FILE.csv --label-column {cleaned.label_column}`): "
        "the notes are never read as features."
    )
sh.explain(
    "Why would attribution find mislabeled examples?",
    """
An example with a wrong label fights the rest of the data: the model must bend to fit it.
Such examples tend to have unusually large influence on their own prediction (they are
"memorised"). That is what the forward-only self-influence measures, in forward passes,
from the responses simulated while this run trained. It is not magic, and it is not the
best detector: in this project's benchmark (benchmarks/mislabel_bench.md: digits, uniform
and class-conditional noise, breast_cancer, mnist1d) **a simple control beat every
attribution signal in every setting** — the area under the margin (AUM) over the second half
of training, the training loss, or cleanlab's cross-validated probabilities. Forward-only
self-influence was the best *attribution* signal (above TRAK and the influence function; with
the margin on mnist1d, where the net memorises its training set) and ranks every example in
about a second; read over the training trajectory it gains on some data (mnist1d: 0.735 →
0.854) and loses a little on other (benchmarks/mislabel_trajectory_study.md). The table above
tells you which was best on this run.
""",
)
