"""Explore: pick a query, see its proponents and opponents, compare methods, and check a
prediction against real retraining (the counterfactual check)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from attrcore import app as sup
from attrcore import plots
from attrcore.app import explore as ex
from pages import _shared as sh

run, version = sh.run_page(
    __file__,
    "Explore attributions",
    "Pick any test example (a *query*) and see which training examples pushed the model "
    "towards its prediction (proponents) and which pushed against it (opponents); compare "
    "attribution methods; and check a prediction by actually retraining without the top examples.",
)
H = sh.home()
ds = sh.dataset_of(run)
measure = st.sidebar.selectbox(
    "Measurement f",
    ["margin", "loss"],
    key="explore_measure",
    help="margin: how sure the model is of the true class (logit of the true class "
    "minus log-sum-exp of the others). loss: the cross-entropy.",
)
k = st.sidebar.slider("k (examples of each sign)", 3, 24, 8, key="explore_k")
per_example = run.sources_kind == "example"

ROWS_PER_PAGE = 500  # table rows / scatter points drawn at once: a page, not the whole split
view = ex.QueryView.of(run, sh.predictions(H, run.name, version))  # the test split, or a run's own rows
QX, Qy, P, pred, names = view.X, view.y, view.probs, view.pred, view.class_names
if view.split == "train":
    st.info("This run was trained on every row (no test split): its queries are its own training examples.")
st.caption(ex.run_caption(run))

# ----------------------------------------------------------------------------- query picker
st.subheader("1 · Pick a query")
n_test = len(QX)
flt = st.pills("Show", view.filters(), default="all", key="explore_filter", required=True)
candidates, nothing_matched = view.filter(flt)
if nothing_matched:
    st.info("No test example matches this filter (no mistakes: a good model!). Showing all.")

if st.session_state.get("query_run") != run.name or st.session_state.get("query", -1) >= n_test:
    st.session_state["query_run"] = run.name
    st.session_state["query"] = view.first_query()
q = int(st.session_state["query"])
select_key = f"explore_select_{run.name}_{flt}"


def set_query(i: int) -> None:
    st.session_state["query"] = int(i)
    if int(i) in candidates_list:
        st.session_state[select_key] = int(i)


def pick_from(chart_key: str) -> None:
    """on_select callback: a clicked example becomes the query."""
    i = sh.picked_id(st.session_state[chart_key])
    if i is not None:
        set_query(i)


candidates_list = [int(i) for i in candidates]
if select_key not in st.session_state or st.session_state[select_key] not in candidates_list:
    st.session_state[select_key] = q if q in candidates_list else candidates_list[0]
st.selectbox(
    "Query",
    candidates_list,
    key=select_key,
    format_func=view.label,
    on_change=lambda: st.session_state.update(query=st.session_state[select_key]),
)
q = int(st.session_state[select_key])
st.session_state["query"] = q

if ds.kind in ("image", "signal"):
    per_page = 36
    n_pages = max(1, -(-len(candidates) // per_page))
    page = st.number_input(f"Gallery page (of {n_pages})", 1, n_pages, 1, key=f"explore_page_{flt}") - 1
    shown = candidates[page * per_page : (page + 1) * per_page]
    fig = plots.example_mosaic(
        QX[shown],
        ds.kind,
        ds.image_shape,
        ids=shown,
        cols=12,
        selectable=True,
        selected=q,
        titles=view.gallery_titles(shown),
        border_colours=view.gallery_borders(shown),
        cell_px=75,
    )
    gallery_key = f"explore_gallery_{run.name}_{flt}_{page}"
    sh.chart(fig, gallery_key, on_select=lambda: pick_from(gallery_key), selection_mode="points")
    st.caption("Click an example to make it the query (red frame: misclassified; title: true→predicted).")
elif ds.kind == "points":
    scatter_key = f"explore_scatter_{run.name}_{flt}"
    shown = sup.page_of(candidates, st.session_state.get(f"explore_rows_page_{flt}", 1), ROWS_PER_PAGE)
    fig = plots.points_scatter(QX[shown], Qy[shown], names, ids=shown, selected=q, feature_names=ds.feature_names)
    sh.chart(fig, scatter_key, on_select=lambda: pick_from(scatter_key), selection_mode="points")
    st.caption("Click a test point to make it the query.")
else:
    shown = sup.page_of(candidates, st.session_state.get(f"explore_rows_page_{flt}", 1), ROWS_PER_PAGE)
    table = view.table(shown, ds.feature_names)
    table_key = f"explore_table_{run.name}_{flt}"

    def _row_picked() -> None:
        rows = st.session_state[table_key].selection.rows
        if rows:
            set_query(int(shown[rows[0]]))

    st.dataframe(table, hide_index=True, key=table_key, on_select=_row_picked, selection_mode="single-row", height=240)
    st.caption("Select a row to make it the query.")
if ds.kind not in ("image", "signal") and len(candidates) > ROWS_PER_PAGE:  # only a page is drawn
    n_row_pages = -(-len(candidates) // ROWS_PER_PAGE)
    st.number_input(
        f"Page of {ROWS_PER_PAGE} queries (of {n_row_pages})", 1, n_row_pages, 1, key=f"explore_rows_page_{flt}"
    )

# ----------------------------------------------------------------------------- the query
row = sh.query_row(H, run.name, version, measure, q)  # [m]: this query only, computed when shown
pos, neg = sup.top_k(row, k)
st.subheader(f"2 · Query #{q}")
qc, info = st.columns([1, 2])
with qc:
    if ds.kind in ("image", "signal"):
        sh.chart(plots.example_mosaic(QX[[q]], ds.kind, ds.image_shape, cols=1, cell_px=180), f"explore_query_{q}")
    elif ds.kind == "points":
        st.markdown(f"Point ({QX[q, 0]:.2f}, {QX[q, 1]:.2f})")
    else:
        st.dataframe(
            view.feature_table(q, ds.feature_names),
            hide_index=True,
            height=min(400, 35 * (ds.n_features + 1) + 3),
        )
with info:
    st.markdown(view.verdict(q))
    f_q = float(sup.measurements(run, QX[[q]], Qy[[q]], measure)[0])
    st.markdown(ex.measurement_text(measure, f_q, row))
    st.dataframe(
        view.top_classes(q),
        hide_index=True,
        column_config={"probability": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.3f")},
    )

tab_attr, tab_cmp, tab_cf = st.tabs(["Proponents and opponents", "Compare methods", "Counterfactual check"])


def source_label(j: int) -> str:
    return ex.source_label(run, j)


with tab_attr:
    if per_example:
        for title, idx, colour, key in (
            ("Proponents (push f up)", pos, plots.PROPONENT, "pro"),
            ("Opponents (push f down)", neg, plots.OPPONENT, "opp"),
        ):
            st.markdown(f"**{title}**")
            titles = ex.score_titles(run, idx, row)
            if ds.kind in ("image", "signal"):
                sh.chart(
                    plots.example_mosaic(
                        ds.X_train[idx],
                        ds.kind,
                        ds.image_shape,
                        titles=titles,
                        cols=12,
                        border_colours=[colour] * len(idx),
                        cell_px=70,
                    ),
                    f"explore_{key}_{q}_{k}",
                )
            elif ds.kind == "tabular":
                sh.chart(
                    plots.feature_heatmap(
                        ds.X_train[idx],
                        ds.feature_names,
                        [f"{source_label(j)} · {row[j]:+.2g}" for j in idx],
                        reference=ds.X_train,
                    ),
                    f"explore_{key}_{q}_{k}",
                )
            else:
                st.dataframe(ex.source_table(run, idx, row), hide_index=True)
            if ex.any_flipped(run, idx):
                st.caption("(flipped!): this example's label was deliberately corrupted (label noise).")
        if ds.kind == "points":
            xx, yy, probs = sh.grid(H, run.name, version)
            sh.chart(
                plots.decision_boundary(
                    xx,
                    yy,
                    probs,
                    ds.X_train,
                    ds.y_train,
                    names,
                    pos,
                    neg,
                    query=QX[q],
                    feature_names=ds.feature_names,
                ),
                f"explore_boundary_{q}_{k}",
            )
            st.caption(
                "Shaded: the model's decision regions; circled: the top proponents (blue) and "
                "opponents (red) of the query (star)."
            )
    chosen = np.concatenate([pos, neg])
    sh.chart(
        plots.score_bars(
            row[chosen],
            [source_label(j) for j in chosen],
            title=f"The {len(pos)} largest and {len(neg)} smallest scores",
        ),
        f"explore_bars_{q}_{k}",
    )
    if not per_example:
        st.dataframe(ex.grouped_sources_table(run, row), hide_index=True)
    sh.explain("What does the sign of a score mean?", sh.SIGN_TEXT)

# ----------------------------------------------------------------------------- compare
with tab_cmp:
    st.markdown(
        "Do different attribution methods agree on this query, and on all test queries? "
        "Agreement is measured by **Spearman rank correlation** (1 = same ordering of all "
        "sources) and by the **overlap of the top-k proponents** (1 = same k examples)."
    )
    # this query's scores per method, and the score matrices of the first n_cmp queries (all
    # of them unless the matrices would be large): computed only when this tab is open
    n_cmp = sup.comparison_queries(n_test, run.n_sources)
    this_label = ex.method_label(run, this=True)
    rows_q: dict[str, np.ndarray] = {this_label: row}
    methods: dict[str, np.ndarray] = {this_label: sh.scores(H, run.name, version, measure, n_cmp)}
    others = sup.comparable_runs(sh.store(), run)
    chosen_runs = st.multiselect(
        "Other saved runs on the same data (e.g. another horizon K)", others, default=others[:2], key="explore_cmp_runs"
    )
    for name in chosen_runs:
        v = sup.run_version(sh.store(), name)
        other = sh.load_run(H, name, v)
        label = ex.method_label(other)
        methods[label] = sh.scores(H, name, v, measure, n_cmp)
        rows_q[label] = sh.query_row(H, name, v, measure, q)
    missing = sup.baselines_available()
    if missing:
        st.info(f"TRAK, influence functions and TracIn: {missing}")
    else:
        picked_baselines = st.multiselect(
            "Baseline methods",
            list(sup.BASELINES),
            default=["trak", "tracin"],
            key="explore_cmp_baselines",
            format_func=sup.BASELINES.get,
            help="Computed once for all test queries and stored; TracIn retrains once with checkpoints.",
        )
        stored = {
            a["key"]["method"]
            for a in sup.stored_baselines(sh.store(), run.name, version)
            if a["key"].get("measure") == measure
        }
        todo = [m for m in picked_baselines if m not in stored]
        if todo:
            if st.button(f"Compute {', '.join(sup.BASELINES[m] for m in todo)}", key="explore_cmp_compute"):
                outcomes = [
                    sh.job(
                        lambda progress, m=m: sup.baseline_scores(
                            sh.store(), run, version, m, measure, progress=progress
                        ),
                        start=f"{sup.BASELINES[m]}…",
                        text=lambda p, m=m: f"{sup.BASELINES[m]}: " + sup.stage_text(p),
                        label=sup.BASELINES[m],
                    )
                    for m in todo
                ]
                if all(o.ok for o in outcomes):
                    st.rerun()
            st.caption("Not computed yet: " + ", ".join(sup.BASELINES[m] for m in todo) + ".")
        for m in picked_baselines:
            if m in stored:
                full = sh.cached_baseline(H, run.name, version, m, measure)
                methods[sup.BASELINES[m]], rows_q[sup.BASELINES[m]] = full[:n_cmp], full[q]
    if n_cmp < n_test:
        st.caption(
            f"Agreement over all queries uses the first {n_cmp} of the {n_test} queries (their score matrices "
            "stay small); this query's agreement uses all sources."
        )
    names_m = list(methods)
    if len(names_m) < 2:
        st.info("Pick at least one more method or run to compare with.")
    else:
        st.dataframe(ex.agreement_table(this_label, rows_q, methods, k), hide_index=True)
        c1, c2 = st.columns(2)
        with c1:
            other_name = st.selectbox("Scatter against", names_m[1:], key="explore_cmp_scatter")
            sh.chart(
                plots.method_scatter(row, rows_q[other_name], names_m[0], other_name),
                f"explore_cmp_scatter_fig_{q}",
            )
        with c2:
            labels, sp, _ov = sup.agreement_matrix(methods, k)
            sh.chart(
                plots.agreement_heatmap(sp, ex.short_method_labels(labels), "mean Spearman over all test queries"),
                "explore_cmp_heat",
            )
        if per_example and ds.kind in ("image", "signal"):
            st.markdown(f"**Top-{k} proponents of query #{q} by method**")
            for name in names_m:
                p_idx, _ = sup.top_k(rows_q[name], k)
                st.caption(name)
                sh.chart(
                    plots.example_mosaic(
                        ds.X_train[p_idx],
                        ds.kind,
                        ds.image_shape,
                        cols=12,
                        cell_px=55,
                        titles=[names[ds.y_train[j]] for j in p_idx],
                    ),
                    f"explore_cmp_top_{name}_{q}_{k}",
                )
    sh.explain(
        "Why would methods disagree?",
        """
Every method approximates the same question (what happens to this prediction if a training
example counts more?) with different shortcuts. **TRAK** linearises the network around the
final weights and projects gradients to a small dimension; **influence functions** assume
training ended at an exact minimum; **TracIn** adds up gradient agreements along the way
without curvature; **forward-only** follows the actual training run for K steps. A method
can agree with another and still be wrong: the **Evaluate** page checks them all against
real retraining.
""",
    )

# ----------------------------------------------------------------------------- counterfactual
with tab_cf:
    st.markdown(
        "Take the scores at their word: **remove** the top sources, **retrain** with the same seed and "
        "batch order, and compare the change the scores predicted with the change that actually happens."
    )
    c1, c2, c3 = st.columns(3)
    which = c1.radio("Remove", ["proponents", "opponents"], horizontal=True, key="explore_cf_which")
    n_remove = c2.slider(
        "how many", 1, min(50, max(1, run.n_sources - 1)), min(10, max(1, run.n_sources - 1)), key="explore_cf_n"
    )
    chosen_cf, predicted = ex.counterfactual_plan(row, n_remove, which)
    c3.metric("predicted change of f", f"{predicted:+.3f}")
    key = ex.counterfactual_key(run, version, q, chosen_cf, measure)
    have = sh.store().get_artifact(sup.COUNTERFACTUAL_KIND, key) is not None
    go = st.button("Retrain without them", key="explore_cf_go", type="primary") if not have else True
    if go:

        def retrain(progress):
            return sup.counterfactual(sh.store(), run, version, q, chosen_cf, row, measure, progress=progress)

        if have:  # stored: no progress to show
            outcome = sup.run_job(retrain, lambda frac, words: None)
            if not outcome.ok:
                st.error(outcome.message)
        else:
            outcome = sh.job(retrain, start="retraining…", text=lambda p: "retraining: " + sup.stage_text(p))
        if outcome.ok:
            res = outcome.value
            c1, c2 = st.columns([1, 1])
            with c1:
                sh.chart(plots.counterfactual_bars(res["predicted"], res["actual"], measure), f"explore_cf_fig_{q}")
            with c2:
                st.metric("f before", f"{res['before']:+.3f}")
                st.metric("f after retraining", f"{res['after']:+.3f}", delta=f"{res['actual']:+.3f}")
                caption, verdict = ex.counterfactual_words(res)
                st.caption(caption)
                st.markdown(verdict)
    else:
        st.caption("Retraining takes about as long as training the run did (without the simulation).")
    sh.explain(
        "Why the predicted and actual changes differ",
        """
The scores are *first-order*: they describe the effect of nudging one source's weight a
tiny bit, and add those effects up. Removing ten examples at once is a big change, the
effects interact, and the network can find a different solution. Agreement in **sign and
rough size** is what to look for. Keeping the seed and batch order fixed removes the
randomness of retraining, so the difference you see is the approximation, not luck.
""",
    )
