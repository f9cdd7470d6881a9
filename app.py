"""attrcore in the browser: ``streamlit run app.py``.

This file is the router (``st.navigation``) and the Home page. Every page follows one
shape: widgets → a config object → cached calls into ``attrcore`` → figures from
``attrcore.plots``; the library itself never imports Streamlit.
"""

from __future__ import annotations

import os

import streamlit as st
import torch

from attrcore import AttrcoreError
from attrcore import app as sup
from pages import _shared as sh

st.set_page_config(page_title="attrcore", page_icon=":material/search:", layout="wide")
# The MLP's per-layer products are small: on a busy 2-core machine a second torch thread
# costs far more in contention than it gains (measured 3.9 s vs 122 s for the same run).
# ATTRCORE_TORCH_THREADS overrides this on bigger machines.
torch.set_num_threads(int(os.environ.get("ATTRCORE_TORCH_THREADS", "1")))


def home() -> None:
    st.title("attrcore: which training examples made this prediction?")
    st.markdown(
        "**Data attribution** traces a model's prediction back to the training examples that "
        "caused it: for every training example it estimates how much the prediction would "
        "change had that example counted more, or not at all. "
        "attrcore simulates each example's effect on the weights *while the model trains*, so "
        "that later any prediction can be explained with forward passes only, far cheaper than "
        "retraining or back-propagating per query. "
        "Train a small network here, pick a prediction, and see its *proponents* (examples "
        "that support it) and *opponents* (examples that argue against it)."
    )

    s = sh.store()
    demo_exists = s.exists(sup.DEMO_RUN)
    left, right = st.columns([1, 1], gap="large")
    with left:
        st.subheader("One-click digits demo")
        req = sup.demo_request()
        st.markdown(
            f"Trains the **digits** preset (8×8 handwritten digits, MLP 64-128-10, plain SGD) "
            f"and opens the explorer. To keep it under a minute it uses "
            f"**{req.train.epochs} epochs instead of 30** and a **short horizon K = "
            f"{req.simulation.horizon_label}** instead of the full one."
        )
        if demo_exists:
            if st.button("Open the digits demo", type="primary", icon=":material/play_arrow:"):
                st.session_state["run"] = sup.DEMO_RUN
                st.switch_page("pages/explore.py")
        elif st.button("Train the digits demo", type="primary", icon=":material/play_arrow:"):
            outcome = sh.job(lambda progress: req.fit_and_save(s, progress=progress), start="Loading digits…")
            if outcome.ok:
                st.session_state["run"] = sup.DEMO_RUN
                st.switch_page("pages/explore.py")
    with right:
        st.subheader("What's in the app")
        st.markdown(
            "- **Train**: pick a data set (or upload a CSV/NPZ), a network and a horizon, "
            "watch it learn, save the run.\n"
            "- **Explore**: pick a query, see its proponents and opponents, compare methods, "
            "and check a prediction by actually retraining.\n"
            "- **Evaluate**: how well do the scores predict retraining (LDS, leave-one-out)?\n"
            "- **Cost**: time and memory against TRAK, measured on this machine.\n"
            "- **Mislabeled data**: which training labels look wrong; review, relabel or remove them and retrain."
        )

    st.subheader("Saved runs")
    table = sh.runs_table(sh.home(), sup.store_version(s))
    if table.empty:
        st.info(
            "No runs yet. Train the digits demo above or go to **Train**. Runs are kept "
            f"in `{s.home}` (set `ATTRCORE_HOME` to use another folder)."
        )
    else:
        st.dataframe(
            table,
            hide_index=True,
            column_config={
                "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
                "test_accuracy": st.column_config.ProgressColumn(
                    "test accuracy", min_value=0.0, max_value=1.0, format="%.3f"
                ),
                "train_seconds": st.column_config.NumberColumn("train s", format="%.1f"),
                "MB": st.column_config.NumberColumn("MB", format="%.1f"),
            },
        )
        with st.expander("Manage runs"):
            name = st.selectbox("Run", table["name"].tolist(), key="home_manage_run")
            c1, c2 = st.columns(2)
            if c1.button("Open in Explore", key="home_open"):
                st.session_state["run"] = name
                st.switch_page("pages/explore.py")
            sure = c2.checkbox(f"Yes, delete {name!r}", key="home_delete_sure")
            if c2.button("Delete run", disabled=not sure, key="home_delete"):
                try:
                    s.delete_run(name)
                except AttrcoreError as err:
                    st.error(sup.error_text(err))
                else:
                    st.rerun()
        st.caption(f"Store: `{s.home}` · {len(table)} run(s).")

    sh.explain(
        "What is data attribution, in plain words?",
        """
A trained model is a summary of its training data. *Data attribution* asks which parts of
that data a particular prediction rests on. The gold standard is brute force: remove an
example, retrain, and see how the prediction moves. That is far too slow for thousands of
examples, so attribution methods *estimate* the effect of every example at once.

attrcore's estimate is computed in two phases. While the network trains, it also tracks
how each training example nudges the weights (the *simulation*). Afterwards, explaining a
prediction needs only forward passes through the network with those nudges applied: no
gradients, no retraining. The **Evaluate** page checks the estimates against real
retraining; the **Cost** page compares the price with TRAK, a popular alternative.
""",
    )
    sh.explain("Scores and signs", sh.SIGN_TEXT)


PAGES = {
    "": [st.Page(home, title="Home", icon=":material/home:", default=True)],
    "Attribute": [
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/explore.py", title="Explore", icon=":material/travel_explore:"),
    ],
    "Judge": [
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/straighten:"),
        st.Page("pages/cost.py", title="Cost", icon=":material/timer:"),
    ],
    "Debug data": [st.Page("pages/mislabeled.py", title="Mislabeled data", icon=":material/label_off:")],
}

sh.run_routed(st.navigation(PAGES, position="top"))  # pages check that they run through here: _shared.require_router
