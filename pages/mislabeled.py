"""Mislabeled data: a placeholder until its own issue lands."""

from __future__ import annotations

import streamlit as st

from pages import _shared as sh

sh.page(__file__, "Mislabeled data")
st.info(
    "Coming soon: this page gets its own issue. It will flip a fraction of the training "
    "labels, rank every training example by its *self-influence* (the example used as its own "
    "query) and show how many of the flipped labels you find by inspecting the top of the list."
)
st.markdown(
    "Until then you can already try the idea by hand: on **Train**, set *label noise* to 0.1, "
    "train, and on **Explore** look at the opponents of misclassified queries; examples "
    "marked (flipped!) are the corrupted ones."
)
sh.explain(
    "Why would attribution find mislabeled examples?",
    """
An example with a wrong label fights the rest of the data: the model must bend to fit it.
Such examples tend to have unusually large influence on their own prediction (they are
"memorised") and show up as strong opponents of clean test examples that look like them.
""",
)
