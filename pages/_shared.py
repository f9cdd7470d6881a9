"""Streamlit glue shared by the pages: the page preamble, the job runner, cached calls into
attrcore and small widgets.

Every page opens with :func:`page` (or :func:`run_page`, which also picks a run) and runs
every long action through :func:`job` (progress bar, optional Cancel button, readable
error, rerun on success; the logic is :func:`attrcore.app.jobs.run_job`).

Caching rules: ``st.cache_resource`` for runs (models and their responses),
``st.cache_data`` for arrays and tables; every cached function is keyed by the store
folder, the run name and the run's version (``attrcore.app.runs.run_version``), so a
retrained or deleted run is never served stale, and nothing here reads
``st.session_state`` inside a cached function.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import streamlit as st

from attrcore import RunStore, TrainedRun
from attrcore import app as sup
from attrcore.app.explore import KIND_WORDS  # noqa: F401  (the pages' names of kinds of data: sh.KIND_WORDS)
from attrcore.data.datasets import Dataset, rebuild_dataset

_ROUTER = threading.local()  # per script thread: is app.py's st.navigation running this page?


# ----------------------------------------------------------------------------- routing


def run_routed(page) -> None:
    """Run the page ``st.navigation`` picked, marking this script run as routed by app.py."""
    _ROUTER.active = True
    try:
        page.run()
    finally:
        _ROUTER.active = False


def require_router(page_file: str) -> None:
    """Rerun through app.py's navigation when Streamlit ran a page on its own.

    With a ``pages/`` folder, Streamlit starts in its old folder-based multipage mode until
    a script calls ``st.navigation``: a deep link (``/explore``) as the very first request
    of a server (and every ``AppTest`` run) runs the page without app.py, so the menu and
    page config would be wrong. Then we turn the folder mode off and rerun; the rerun goes
    through app.py and lands on the same page with its widget state intact. Once per
    session: a rerun drops a pending button click, and AppTest re-enables the folder mode
    before every run (where running the page directly is harmless).
    """
    if getattr(_ROUTER, "active", False) or st.session_state.get("_rerouted"):
        return
    st.session_state["_rerouted"] = True
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the flag: leave the page as it is
        return
    PagesManager.uses_pages_directory = False
    st.rerun()


# ----------------------------------------------------------------------------- preamble and jobs


def page(page_file: str, title: str, caption: str | None = None) -> None:
    """The preamble of every page: route through app.py, then the title and its caption."""
    require_router(page_file)
    st.title(title)
    if caption:
        st.caption(caption)


def run_page(page_file: str, title: str, about: str, caption: str | None = None) -> tuple[TrainedRun, str]:
    """:func:`page` for a page about one run: the sidebar run picker; stops the page (after
    drawing the empty state with ``about``) when there is no run yet."""
    page(page_file, title, caption)
    picked = pick_run(about)
    if picked is None:
        st.stop()
    return picked


def job(
    fn,
    *,
    start: str = "Working…",
    text=None,
    on_epoch=None,
    cancel: tuple[str, str] | None = None,
    label: str = "The job",
    rerun: bool = False,
) -> sup.JobOutcome:
    """Run one long action ``fn(progress)`` under a progress bar (``text(progress)`` words each
    report; default :func:`attrcore.app.stage_text`). ``cancel=(label, key)`` shows a Cancel
    button (clicking it stops the script run, so nothing is saved); a failure or a
    cancellation is shown as one readable message; ``rerun=True`` reruns the page on success."""
    if cancel is not None:
        st.button(cancel[0], key=cancel[1], icon=":material/stop:", help="Stops at once; nothing is saved.")
    bar = st.progress(0.0, text=start)
    outcome = sup.run_job(
        fn,
        lambda frac, words: bar.progress(frac, text=words),
        text=text or sup.stage_text,
        on_epoch=on_epoch,
        label=label,
    )
    if outcome.cancelled:
        st.warning(outcome.message)
    elif not outcome.ok:
        st.error(outcome.message)
    elif rerun:
        st.rerun()
    return outcome


# ----------------------------------------------------------------------------- store


@st.cache_resource(show_spinner=False)
def _store(home: str) -> RunStore:
    return RunStore(home)


def store() -> RunStore:
    """The run store at ``$ATTRCORE_HOME`` (read on every call, so tests can point it)."""
    return _store(str(RunStore().home))


def home() -> str:
    return str(store().home)


# ----------------------------------------------------------------------------- cached calls


@st.cache_resource(max_entries=4, show_spinner="Loading the run from the store…")
def load_run(home: str, name: str, version: str) -> TrainedRun:
    return TrainedRun.load(_store(home), name)


@st.cache_resource(max_entries=8, show_spinner="Loading the data…")
def load_data(spec_json: str) -> Dataset:
    return rebuild_dataset(json.loads(spec_json))


def dataset_of(run: TrainedRun) -> Dataset:
    return load_data(json.dumps(run.spec.data, sort_keys=True))


@st.cache_data(max_entries=16, show_spinner="Scoring the queries against every source (once per run)…")
def scores(home: str, name: str, version: str, measure: str, n_queries: int | None = None) -> np.ndarray:
    """Scores ``[q, m]`` of the first ``n_queries`` queries (all by default)."""
    run = load_run(home, name, version)
    return sup.query_scores(_store(home), run, version, measure, n_queries)


@st.cache_data(max_entries=64, show_spinner=False)
def query_row(home: str, name: str, version: str, measure: str, q: int) -> np.ndarray:
    """Scores ``[m]`` of query ``q`` alone: what Explore shows, computed when shown."""
    run = load_run(home, name, version)
    X, y, _split = sup.query_pool(dataset_of(run))
    return sup.query_row(run, X[q], y[q], measure)


@st.cache_data(max_entries=8, show_spinner="Compressing the responses (rank 256) and scoring…")
def compressed_scores(home: str, name: str, version: str, measure: str) -> tuple[int, np.ndarray] | None:
    """(rank, scores) of a dense run's responses compressed to rank 256; None for a compressed run."""
    run = load_run(home, name, version)
    comp = sup.compressed_variant(run)
    if comp is None:
        return None
    ds = dataset_of(run)
    return comp.responses.rank, comp.score(ds.X_test, ds.y_test, measure=measure).astype(np.float32)


@st.cache_data(max_entries=16, show_spinner=False)
def predictions(home: str, name: str, version: str) -> np.ndarray:
    run = load_run(home, name, version)
    return sup.predict(run, sup.query_pool(dataset_of(run))[0])


@st.cache_data(max_entries=8, show_spinner=False)
def grid(home: str, name: str, version: str):
    return sup.decision_grid(load_run(home, name, version))


@st.cache_data(show_spinner=False)
def runs_table(home: str, store_version: str):
    return _store(home).runs_table()


# ----------------------------------------------------------------------------- widgets


def pick_run(about: str, label: str = "Run", help: str | None = None) -> tuple[TrainedRun, str] | None:
    """A sidebar run picker over runs with simulated responses; remembers the choice in
    ``st.session_state["run"]``. Returns ``(run, version)`` or None: then the empty state,
    with ``about`` (what the page will show) in an expander, has been drawn."""
    s = store()
    names = sup.attributable_runs(s)
    gone = sup.open_run_notice(s, st.session_state.get("run"), names)
    if gone:
        st.warning(gone, icon=":material/delete:")
    if not names:
        st.info(
            "There is no run to explore yet. Train one on the **Train** page, or start the digits demo from **Home**."
        )
        st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
        explain("What is this page for?", about, expanded=True)
        return None
    current = st.session_state.get("run")
    index = names.index(current) if current in names else 0
    name = st.sidebar.selectbox(label, names, index=index, help=help or "Saved runs that can attribute.")
    st.session_state["run"] = name
    version = sup.run_version(s, name)
    return load_run(home(), name, version), version


def explain(title: str, body: str, expanded: bool = False) -> None:
    with st.expander(title, expanded=expanded, icon=":material/lightbulb:"):
        st.markdown(body)


def example_caption(dataset: Dataset, i: int, split: str = "train") -> str:
    y = dataset.y_train if split == "train" else dataset.y_test
    return f"#{i} · {dataset.class_names[int(y[i])]}"


SIGN_TEXT = """
A score τ(q, j) answers: *if training source j had counted a little more, how much would
the model's measurement on this query change?* Removing the source changes it by about −τ.

- **Positive (blue) — proponent.** The source pushes the measurement up: with the default
  *margin* measurement, it makes the model more sure of the query's true class.
  Typical proponents look like the query and share its label.
- **Negative (red) — opponent.** The source pushes the measurement down. Opponents often
  look like the query but carry another label (sometimes a mislabeled example), or sit on
  the other side of the decision boundary.
- **Size.** Scores are in units of the measurement per unit of loss weight; compare them
  within one query rather than across queries.
"""

HORIZON_TEXT = """
attrcore simulates, during training, how each source's weight would move the final
parameters. The **horizon K** is how many later training steps each contribution is
followed through before it is frozen.

- **K = 0**: every step's gradient is just added up (cheap, like TracIn); it ignores how
  later training undoes or amplifies a change.
- **Larger K**: more faithful, more simulation work during training (roughly K times the
  curvature products).
- **Full**: the exact derivative of this training run; the most expensive.

The *stationary* scheme instead runs K Neumann steps at the final parameters towards the
classic influence-function answer; there K is the number of steps and more is more accurate.
"""


def chart(fig, key: str, **kwargs):
    """``st.plotly_chart`` with the figure's own styling and no toolbar."""
    return st.plotly_chart(fig, key=key, theme=None, config={"displayModeBar": False}, **kwargs)


def picked_id(event_or_state) -> int | None:
    """The ``customdata`` id of the first point of a plotly selection, or None."""
    try:
        points = event_or_state.selection.points
    except AttributeError:
        try:
            points = event_or_state["selection"]["points"]
        except (KeyError, TypeError):
            return None
    for pt in points or []:
        cd = pt.get("customdata")
        if isinstance(cd, (list, tuple)):
            cd = cd[0] if cd else None
        if cd is not None:
            return int(cd)
    return None


@st.cache_data(max_entries=32, show_spinner="Loading stored baseline scores…")
def cached_baseline(
    home: str, name: str, version: str, method: str, measure: str, models: int = 1, proj_dim: int | None = None
) -> np.ndarray:
    run = load_run(home, name, version)
    return sup.baseline_scores(_store(home), run, version, method, measure, models=models, proj_dim=proj_dim)


@st.cache_data(max_entries=8, show_spinner="Loading the stored ground truth…")
def lds_gt(home: str, name: str, version: str, settings: sup.LDSSettings):
    return sup.lds_truth(_store(home), load_run(home, name, version), version, settings)


@st.cache_data(max_entries=8, show_spinner="Loading the stored leave-one-out effects…")
def loo_gt(home: str, name: str, version: str, settings: sup.LOOSettings):
    return sup.loo_truth(_store(home), load_run(home, name, version), version, settings)


@st.cache_data(max_entries=16, show_spinner=False)
def lds_rows(
    home: str, name: str, version: str, settings: sup.LDSSettings, method_names: tuple, _methods: dict
) -> list[dict]:
    """LDS per method (``_methods`` is not hashed: ``method_names`` and the run version key it)."""
    return sup.lds_summary(lds_gt(home, name, version, settings), _methods)


@st.cache_data(ttl=60, show_spinner=False)
def bench_docs(folder: str) -> list[dict]:
    return sup.bench_docs(folder)
