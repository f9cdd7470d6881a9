"""``attribute --method trak|if|tracin|grad-dot|random``: train, fit the baseline, score.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .eval_commands import _train_config


def cli_attribute(args) -> int:
    """``attribute --method trak|if|tracin|grad-dot|random``: train, fit the baseline, score."""
    from ..data.datasets import load_queries
    from ..data.sources import make_sources
    from ..engine.model import MLP, MLPConfig
    from ..methods.registry import make_baseline, train_ensemble
    from ..methods.tracin import tracin_checkpoint_epochs
    from .common import _dataset, _hidden

    ds = _dataset(args)
    cfg = _train_config(args)
    mlp = MLP(MLPConfig(ds.n_features, ds.n_classes, _hidden(args.hidden), args.activation))
    src = make_sources(ds, args.sources)
    method = f"if-{getattr(args, 'if_solver', 'explicit')}" if args.method == "if" else args.method
    opts: dict = {}
    models = 1
    if method == "trak":
        models = int(getattr(args, "ensemble", 1))
        if models < 1:
            raise ConfigError(f"--ensemble must be ≥ 1, got {models}.")
        opts = {"proj_dim": args.proj_dim, "lambda_reg": getattr(args, "lambda_reg", None)}
    elif method.startswith("if-"):
        opts = {"damping": args.damping}
    ckpts = tracin_checkpoint_epochs(cfg.epochs) if method == "tracin" else ()
    runs = train_ensemble(mlp, ds.X_train, ds.y_train, cfg, [cfg.seed + i for i in range(models)],
                          checkpoint_epochs=ckpts)
    a = make_baseline(method, mlp, runs, cfg, measure=args.measure, target_class=args.target_class, **opts)
    a.fit(ds.X_train, ds.y_train, sources=src)
    X_q, y_q = load_queries(args.test, ds)
    scores = a.score(X_q, y_q).numpy()
    print(f"{method}: scores [{scores.shape[0]} queries, {scores.shape[1]} sources]; setup "
          f"{a.timings['setup_seconds']:.2f} s, {1000 * a.seconds_per_query:.3f} ms per query")
    for q in range(min(3, scores.shape[0])):
        top = np.argsort(-scores[q])[:5]
        print(f"query {q}: top proponents " + ", ".join(f"{src.names[j]} ({scores[q, j]:+.3g})" for j in top))
    if args.out:
        np.save(args.out, scores.astype(np.float32))
        print(f"wrote {args.out}")
    return 0
