"""``attribute --method trak|if|tracin|grad-dot|random``: train, fit the method, score.

One call of :func:`attrcore.methods.pipeline.attribute`. ``--method forward-only`` (the
default) goes through the same pipeline (:func:`~attrcore.methods.pipeline.prepare`, the
part before scoring): its run is trained and simulated as ``train`` does (saved with
``--run``), handed to the pipeline, which reuses it, and read out as ``score`` does, streamed
(:mod:`attrcore.cli.run_commands`).
"""

from __future__ import annotations

import numpy as np

from ..config import parse_hidden
from ..data.datasets import load_queries
from ..data.sources import make_sources
from ..engine.model import MLP, MLPConfig
from ..methods.pipeline import attribute
from ..methods.registry import resolve_method
from .common import _dataset
from .eval_commands import _train_config


def cli_attribute(args) -> int:
    """``attribute --method trak|if|tracin|grad-dot|random``: train, fit the method, score."""
    ds = _dataset(args)
    cfg = _train_config(args)
    mlp = MLP(MLPConfig(ds.n_features, ds.n_classes, parse_hidden(args.hidden), args.activation))
    src = make_sources(ds, args.sources)
    method = resolve_method(args.method, getattr(args, "if_solver", None))
    opts: dict = {}
    models = 1
    if method == "trak":
        models = int(getattr(args, "ensemble", 1))
        opts = {"proj_dim": args.proj_dim, "lambda_reg": getattr(args, "lambda_reg", None)}
    elif method.startswith("if-"):
        opts = {"damping": args.damping}
    X_q, y_q = load_queries(args.test, ds)
    result = attribute(
        method,
        mlp,
        ds.X_train,
        ds.y_train,
        X_q,
        y_q,
        cfg,
        sources=src,
        models=models,
        measure=args.measure,
        target_class=args.target_class,
        options=opts,
    )
    scores = result.scores.numpy()
    print(
        f"{method}: scores [{scores.shape[0]} queries, {scores.shape[1]} sources]; setup "
        f"{result.timings['setup_seconds']:.2f} s, {1000 * result.seconds_per_query:.3f} ms per query"
    )
    for q in range(min(3, scores.shape[0])):
        top = np.argsort(-scores[q])[:5]
        print(f"query {q}: top proponents " + ", ".join(f"{src.names[j]} ({scores[q, j]:+.3g})" for j in top))
    if args.out:
        np.save(args.out, scores.astype(np.float32))
        print(f"wrote {args.out}")
    return 0
