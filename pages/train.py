"""Train: data (built-in or uploaded) → model and optimiser → simulation → a saved run."""

from __future__ import annotations

import json

import streamlit as st

from attrcore import AttrcoreError, SimulationConfig, TrainConfig, plots
from attrcore import app as sup
from attrcore.config import Horizon
from attrcore.data import BUILTIN_DATASETS, describe_builtin
from attrcore.engine import ACTIVATIONS
from pages import _shared as sh

UPLOAD = "upload"
NONE = "(none)"

sh.page(
    __file__,
    "Train a model",
    "Choose data, a network and how to simulate each training source; training saves a "
    "run you can explore. Nothing is saved if training fails or you cancel it.",
)

if st.session_state.get("train_cancel"):
    st.warning("Training was cancelled; nothing was saved.")

# ----------------------------------------------------------------------------- data
data_col, model_col = st.columns(2, gap="large")
with data_col:
    st.subheader("1 · Data")
    source = st.selectbox(
        "Data set",
        [*BUILTIN_DATASETS, UPLOAD],
        key="train_dataset",
        format_func=lambda s: "Upload a CSV or NPZ file…" if s == UPLOAD else s,
    )
    label_column = group_column = None
    n_samples = noise = None
    path = eval_path = None
    standardize = None
    if source == UPLOAD:
        file = st.file_uploader(
            "Your data (.csv or .npz)",
            type=["csv", "npz"],
            key="train_upload",
            help="CSV: one row per example, a header, a label column, numeric "
            "features. NPZ: arrays X [n, d], y [n], optional groups [n].",
        )
        if file is None:
            st.info("Upload a file to continue. It is validated here and never unpickled.")
        else:
            try:
                upload = sup.receive_upload(sh.home(), file.name, file.getvalue())
                path = upload.path
                if upload.columns is not None:
                    label_column = st.selectbox(
                        "Label column", upload.columns, index=upload.label_index, key="train_label_col"
                    )
                    g = st.selectbox(
                        "Group column (optional, defines grouped sources)",
                        [NONE, *[c for c in upload.columns if c != label_column]],
                        key="train_group_col",
                    )
                    group_column = None if g == NONE else g
            except AttrcoreError as err:  # a rejected file is not kept (the page still holds its bytes)
                st.error(sup.error_text(err))
        if path is not None:
            eval_file = st.file_uploader(
                "Your evaluation set (optional, .csv or .npz)",
                type=["csv", "npz"],
                key="train_eval_upload",
                help="The same feature columns and label column as your data. With it, every row of your "
                "data is trained on and this file is the test split (no random split).",
            )
            if eval_file is not None:
                try:
                    eval_path = sup.receive_upload(sh.home(), eval_file.name, eval_file.getvalue()).path
                except AttrcoreError as err:
                    st.error(sup.error_text(err))
            standardize = st.checkbox(
                "standardise the features (mean 0, sd 1 from the training split)",
                True,
                key="train_standardize",
                help="Recommended for tables whose columns have different scales; the same transform is "
                "applied to the test split and to every query. 2-D points are never rescaled.",
            )
    else:
        st.caption(describe_builtin(source))
        if source == "moons":
            c1, c2 = st.columns(2)
            n_samples = c1.slider("points", 100, 2000, 500, step=100, key="train_moons_n")
            noise = c2.slider("noise", 0.0, 0.5, 0.2, step=0.05, key="train_moons_noise")
    c1, c2, c3 = st.columns(3)
    split_seed = c1.number_input("split seed", 0, 2**31, 0, key="train_split_seed")
    test_fraction = c2.slider(
        "test fraction",
        0.0,
        0.5,
        0.2,
        step=0.05,
        key="train_test_fraction",
        disabled=eval_path is not None,
        help="Held-out share of the rows; 0 trains on every row (the queries are then training rows). "
        "Not used with an evaluation file.",
    )
    label_noise = c3.slider(
        "label noise",
        0.0,
        0.5,
        0.0,
        step=0.01,
        key="train_label_noise",
        help="Fraction of training labels flipped to another class on purpose.",
    )

    data_choice = None
    dataset = None
    if source != UPLOAD or path is not None:
        data_choice = sup.DataChoice(
            source=str(path) if source == UPLOAD else source,
            seed=int(split_seed),
            test_fraction=float(test_fraction),
            label_noise=float(label_noise),
            label_column=label_column,
            group_column=group_column,
            n_samples=n_samples,
            noise=noise,
            eval_source=None if eval_path is None else str(eval_path),
            standardize=None if standardize is None or standardize else False,
        )
        try:  # a rejected upload is not kept
            dataset = sup.load_choice(
                sh.home(), data_choice, lambda c: sh.load_data(json.dumps(c.kwargs(), sort_keys=True))
            )
        except AttrcoreError as err:
            st.error(sup.error_text(err))
    if dataset is not None:
        st.markdown(
            f"**{dataset.name}**: {dataset.n_train} training and {dataset.n_test} test examples, "
            f"{dataset.n_features} features, {dataset.n_classes} classes "
            f"({sh.KIND_WORDS.get(dataset.kind, dataset.kind)})"
            + (f", **{len(dataset.flipped)} labels flipped**" if len(dataset.flipped) else "")
            + "."
        )
        show = min(16, dataset.n_train)
        if dataset.kind in ("image", "signal"):
            st.plotly_chart(
                plots.example_mosaic(
                    dataset.X_train[:show],
                    dataset.kind,
                    dataset.image_shape,
                    titles=[sh.example_caption(dataset, i) for i in range(show)],
                    cols=8,
                    cell_px=60,
                ),
                key="train_preview",
                config={"displayModeBar": False},
            )
        elif dataset.kind == "points":
            st.plotly_chart(
                plots.points_scatter(
                    dataset.X_train, dataset.y_train, dataset.class_names, feature_names=dataset.feature_names
                ),
                key="train_preview",
                config={"displayModeBar": False},
            )
        else:
            import pandas as pd

            preview = pd.DataFrame(dataset.X_train[:8], columns=list(dataset.feature_names))
            preview.insert(0, "label", [dataset.class_names[int(c)] for c in dataset.y_train[:8]])
            st.dataframe(preview, hide_index=True)

# ----------------------------------------------------------------------------- model
with model_col:
    st.subheader("2 · Network and optimiser")
    c1, c2 = st.columns(2)
    hidden_text = c1.text_input(
        "hidden layer widths", "128", key="train_hidden", help="e.g. '128' or '64, 32'; 'none' for logistic regression"
    )
    activation = c2.selectbox("activation", list(ACTIVATIONS), key="train_activation")
    # labels, defaults, choices and help come from the option definitions (attrcore.config)
    c1, c2, c3 = st.columns(3)
    # No min/max on the widgets: an out-of-range value must reach the options' own checks,
    # which block the Train button and say why (a bounded widget keeps its old value silently).
    epochs = c1.number_input(**sup.widget_args(TrainConfig, "epochs"), step=1, key="train_epochs")
    lr = c2.number_input(**sup.widget_args(TrainConfig, "lr"), step=0.01, format="%.4f", key="train_lr")
    batch_size = c3.number_input(**sup.widget_args(TrainConfig, "batch_size"), step=1, key="train_batch")
    c1, c2, c3 = st.columns(3)
    momentum = c1.number_input(**sup.widget_args(TrainConfig, "momentum"), step=0.1, key="train_momentum")
    weight_decay = c2.number_input(
        **sup.widget_args(TrainConfig, "weight_decay"), step=1e-4, format="%.5f", key="train_wd"
    )
    schedule = c3.selectbox(**sup.widget_args(TrainConfig, "lr_schedule"), key="train_schedule")
    seed = st.number_input(**sup.widget_args(TrainConfig, "seed"), min_value=0, max_value=2**31, key="train_seed")

    st.subheader("3 · Simulation and sources")
    scheme = st.radio(
        **sup.widget_args(
            SimulationConfig,
            "scheme",
            help="trajectory: follow the real SGD run; stationary: influence-function target at "
            "the end; none: train only (cannot attribute).",
        ),
        horizontal=True,
        key="train_scheme",
    )
    horizon = None
    damping = SimulationConfig().damping
    if scheme == "trajectory":
        c1, c2 = st.columns(2)
        full = c1.checkbox("full horizon (exact, slowest)", False, key="train_full")
        if not full:
            # the page starts at K = 16 (quick to train), not at the library's full horizon
            horizon = int(
                c2.number_input(
                    f"horizon K ({Horizon.meaning('trajectory')})",
                    value=16,
                    step=1,
                    key="train_horizon",
                    help=sup.widget_args(SimulationConfig, "horizon")["help"],
                )
            )
    elif scheme == "stationary":
        c1, c2 = st.columns(2)
        horizon = int(c1.number_input(f"K ({Horizon.meaning('stationary')})", value=100, step=1, key="train_stat_k"))
        damping = float(
            c2.number_input(
                **sup.widget_args(SimulationConfig, "damping"),
                step=0.01,
                key="train_damping",
            )
        )
    curvature = SimulationConfig().curvature
    rank = SimulationConfig().rank
    compression = SimulationConfig().compression
    if scheme != "none":
        curvature = st.selectbox(
            **sup.widget_args(
                SimulationConfig, "curvature", help="Gauss-Newton is positive semi-definite and a little cheaper."
            ),
            key="train_curvature",
        )
        c1, c2 = st.columns(2)
        stored = c1.radio(
            "responses",
            ["auto", "dense", "compressed"],
            horizontal=True,
            key="train_responses",
            help="compressed: every source's response as a rank-r factorisation Δ ≈ C Qᵀ (r·(p + m) "
            "numbers instead of m·p; a query costs r forward passes instead of m). auto: rank 256 where "
            "that is at least 8× smaller than dense, dense otherwise.",
        )
        if stored == "dense":
            rank = None
        elif stored == "compressed":
            rank = int(c2.number_input("rank r", 1, 4096, 256, key="train_rank"))
            compression = st.selectbox(**sup.widget_args(SimulationConfig, "compression"), key="train_compression")
    has_groups = dataset is not None and dataset.train_groups is not None
    kinds = ["example", "class", "group"] if has_groups else ["example", "class"]
    sources = st.radio(
        "sources (what gets credit)",
        kinds,
        horizontal=True,
        key="train_sources",
        format_func={
            "example": "each example",
            "class": "each class",
            "group": f"each value of '{group_column or 'groups'}'",
        }.get,
    )

sh.explain("What does the horizon K trade off?", sh.HORIZON_TEXT)
sh.explain(
    "What are sources?",
    """
A *source* is whatever gets credit. **Each example** (the default) scores every training
row on its own. **Each class** asks which classes, as a whole, push a prediction. With a
**group column** (a CSV column, or an NPZ array `groups`) every distinct value is one
source: for example the publisher, hospital or annotator a row came from. Grouping also
makes the run much smaller (one stored response per group instead of per row).
""",
)
sh.explain(
    "Which files can I upload?",
    """
- **CSV**: a header row, one example per row, a label column (words or integers), an
  optional group column, and numeric feature columns. Empty cells and text features are
  refused with a message saying which rows or columns to fix.
- **NPZ** (`numpy.savez`): arrays `X` `[n, d]` numbers, `y` `[n]` labels, optional `groups`.
  Files that would need pickle to load are refused (pickle can run code).
Two features make a 2-D data set that is drawn as points with its decision boundary.
""",
)

# ----------------------------------------------------------------------------- run
st.subheader("4 · Train and save")
request = None
errors = []
if data_choice is None or dataset is None:
    errors.append("Choose valid data first.")
else:
    try:
        sim = SimulationConfig(
            scheme=scheme, horizon=horizon, curvature=curvature, damping=damping, rank=rank, compression=compression
        )
        tcfg = TrainConfig(
            epochs=int(epochs),
            lr=float(lr),
            batch_size=int(batch_size),
            momentum=float(momentum),
            weight_decay=float(weight_decay),
            lr_schedule=schedule,
            seed=int(seed),
        )
        hidden = sup.parse_hidden(hidden_text)
        estimate = sup.simulation_estimate(dataset, hidden, tcfg, sim, sources)
        st.caption(sup.estimate_text(estimate))
        for warning in estimate["warnings"]:
            st.warning(warning, icon=":material/hourglass:")
        if estimate["problem"]:
            errors.append(estimate["problem"])
        c1, c2 = st.columns([3, 1])
        default_name = sup.default_run_name(data_choice, sim, sources)
        if st.session_state.get("train_name") in (None, st.session_state.get("train_name_default")):
            st.session_state["train_name"] = default_name  # follow the settings until the user types a name
        st.session_state["train_name_default"] = default_name
        name = c1.text_input("run name", key="train_name")
        overwrite = c2.checkbox("overwrite if it exists", key="train_overwrite")
        sh.store().check_can_save(name.strip(), overwrite)  # a bad or taken name blocks the button
        request = sup.TrainRequest(
            data=data_choice,
            name=name.strip(),
            hidden=hidden,
            activation=activation,
            train=tcfg,
            simulation=sim,
            sources=sources,
            overwrite=overwrite,
        )
    except AttrcoreError as err:
        errors.append(sup.error_text(err))
if errors:
    request = None  # blocked: the button says why
for e in errors:
    st.error(e)

if st.button(
    "Train and save",
    type="primary",
    disabled=request is None,
    key="train_button",
    icon=":material/rocket_launch:",
    help=f"Blocked: {errors[0]}" if errors else None,
):
    st.session_state.pop("train_done", None)
    chart = st.empty()

    def curve(history) -> None:
        chart.plotly_chart(
            plots.training_curves(history, request.train.epochs),
            key=f"train_curve_{len(history)}",
            config={"displayModeBar": False},
        )

    outcome = sh.job(
        lambda progress: request.fit_and_save(sh.store(), progress=progress),
        start="Starting…",
        on_epoch=curve,
        cancel=("Cancel training", "train_cancel"),
    )
    if outcome.ok:
        run = outcome.value
        st.session_state["run"] = request.name
        st.session_state["train_done"] = {
            "name": request.name,
            "metrics": run.metrics,
            "timings": run.timings,
            "history": run.history,
            "epochs": request.train.epochs,
        }
        st.rerun()  # show the saved run alone, without the live progress widgets

done = st.session_state.get("train_done")
if done:
    m, t = done["metrics"], done["timings"]
    st.success(
        f"Saved run **{done['name']}**: test accuracy {m.get('test_accuracy', float('nan')):.1%}, "
        f"{t.get('train_seconds', 0):.1f} s of training of which {t.get('simulate_seconds', 0):.1f} s "
        "simulating."
    )
    st.plotly_chart(
        plots.training_curves(done["history"], done["epochs"]),
        key="train_curve_final",
        config={"displayModeBar": False},
    )
    if st.button("Explore this run", icon=":material/travel_explore:", key="train_explore"):
        st.session_state["run"] = done["name"]
        st.switch_page("pages/explore.py")
