"""Baselines: gradient factors against torch.func, IF solvers against each other and an
explicit oracle, the sign convention of every method, and TRAK on the CPU with its guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from attrcore import methods as B
from attrcore.config import TrainConfig
from attrcore.data import load_dataset
from attrcore.engine import MLP, MLPConfig, train
from attrcore.errors import ConfigError, ShapeError
from attrcore.methods import base as methods_base
from attrcore.methods import influence as methods_influence


@pytest.fixture(scope="module")
def tiny():
    """150 digits, MLP 64-8-10 (p = 610), trained 5 epochs in float64, with checkpoints."""
    ds = load_dataset("digits")
    X = torch.tensor(ds.X_train[:150], dtype=torch.float64)
    y = torch.tensor(ds.y_train[:150])
    Xq = torch.tensor(ds.X_test[:12], dtype=torch.float64)
    yq = torch.tensor(ds.y_test[:12])
    mlp = MLP(MLPConfig(64, 10, (8,)))
    cfg = TrainConfig(epochs=5, lr=0.1, batch_size=32, weight_decay=1e-3, dtype="float64")
    out = train(mlp, X, y, cfg, checkpoint_epochs=B.tracin_checkpoint_epochs(5, 5))
    return {"mlp": mlp, "X": X, "y": y, "Xq": Xq, "yq": yq, "cfg": cfg, "out": out}


def per_sample_grads(mlp, theta, X, y, kind):
    """The obvious reference: torch.func.grad of the measurement, vmapped over examples."""

    def f(t, x, label):
        z = mlp.forward(t, x.unsqueeze(0))[0]
        is_y = torch.arange(z.shape[0]) == label  # (one_hot does not vmap)
        zy = (z * is_y).sum()
        if kind == "margin":
            return zy - torch.logsumexp(z.masked_fill(is_y, float("-inf")), 0)
        if kind == "loss":
            return torch.logsumexp(z, 0) - zy
        return (torch.softmax(z, 0) * is_y).sum()  # prob of the true class

    return torch.func.vmap(torch.func.grad(f), in_dims=(None, 0, 0))(theta, X, y)


def objective_hessian(mlp, theta, X, y, wd):
    """Hessian of (1/n) Σ ℓ_i + (λ/2)‖θ‖² by torch.func (the oracle for the IF tests)."""

    def L(t):
        ce = torch.nn.functional.cross_entropy(mlp.forward(t, X), y)
        return ce + 0.5 * wd * (t * t).sum()

    return torch.func.hessian(L)(theta)


# ----------------------------------------------------------------- gradient machinery


@pytest.mark.parametrize("kind", ["margin", "loss", "prob"])
def test_output_factors_match_torch_func(tiny, kind):
    mlp, theta = tiny["mlp"], tiny["out"].theta
    f = B.output_factors(mlp, theta, tiny["Xq"], tiny["yq"], kind)
    assert_close(methods_base._flat(f), per_sample_grads(mlp, theta, tiny["Xq"], tiny["yq"], kind))


def test_gram_and_dot_match_materialised_gradients(tiny):
    mlp, theta = tiny["mlp"], tiny["out"].theta
    fq = B.output_factors(mlp, theta, tiny["Xq"], tiny["yq"], "margin")
    ft = B.output_factors(mlp, theta, tiny["X"], tiny["y"], "loss")
    G = methods_base._flat(ft)
    assert_close(methods_base._gram(fq, ft), methods_base._flat(fq) @ G.T)
    V = torch.randn(5, mlp.n_params, dtype=torch.float64)
    assert_close(methods_base._dot(V, ft), V @ G.T)
    # the last layer alone: factors of one layer against the matching parameter slice
    sl = methods_base._param_slice(mlp, [mlp.n_layers - 1])
    last = B.output_factors(mlp, theta, tiny["X"], tiny["y"], "loss", layers=[mlp.n_layers - 1])
    assert_close(methods_base._flat(last), G[:, sl])


def test_last_layer_hessian_closed_form_matches_oracle(tiny):
    mlp, theta, X, y = tiny["mlp"], tiny["out"].theta, tiny["X"], tiny["y"]
    sl = methods_base._param_slice(mlp, [mlp.n_layers - 1])
    H = objective_hessian(mlp, theta, X, y, 1e-3)
    assert_close(methods_influence._last_layer_hessian(mlp, theta, X, 1e-3), H[sl, sl])
    from attrcore.engine.curvature import MLPCurvature

    curv = MLPCurvature(mlp, theta, X, y, weight_decay=1e-3)
    assert_close(methods_influence._hessian_block(mlp, curv, slice(0, mlp.n_params)), H)


# ------------------------------------------------------------------ influence functions


def test_if_explicit_equals_the_formula(tiny):
    """−(1/n) ∇f(q)ᵀ (H + δI)⁻¹ ∇ℓ_j with the torch.func Hessian, whole network."""
    mlp, theta, X, y = tiny["mlp"], tiny["out"].theta, tiny["X"], tiny["y"]
    Xq, yq = tiny["Xq"], tiny["yq"]
    damping = 0.05
    a = B.InfluenceExplicit(mlp, theta, 1e-3, damping=damping, layers="all")
    with pytest.warns(UserWarning, match="not positive definite"):  # the exact H is indefinite: LU path
        a.fit(X, y)
    got = a.score(Xq, yq).double()
    H = objective_hessian(mlp, theta, X, y, 1e-3) + damping * torch.eye(mlp.n_params, dtype=torch.float64)
    Gq = per_sample_grads(mlp, theta, Xq, yq, "margin")
    Gt = per_sample_grads(mlp, theta, X, y, "loss")
    want = -(Gq @ torch.linalg.solve(H, Gt.T)) / len(X)
    assert_close(got, want.float().double(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("curvature,layers", [("gauss-newton", "all"), ("hessian", "last")])
def test_if_explicit_and_cg_agree(tiny, curvature, layers):
    mlp, theta, X, y = tiny["mlp"], tiny["out"].theta, tiny["X"], tiny["y"]
    kw = {"damping": 0.05, "layers": layers, "curvature": curvature}
    explicit = B.InfluenceExplicit(mlp, theta, 1e-3, **kw).fit(X, y)
    cg = B.InfluenceCG(mlp, theta, 1e-3, max_iter=500, tol=1e-10, dtype=torch.float64, **kw).fit(X, y)
    e, c = explicit.score(tiny["Xq"], tiny["yq"]), cg.score(tiny["Xq"], tiny["yq"])
    assert cg.meta["cg_unconverged"] == 0 and cg.meta["negative_curvature"] == 0
    assert_close(c, e, rtol=1e-3, atol=1e-3 * float(e.abs().max()))


def test_if_explicit_refuses_a_huge_hessian(tiny):
    with pytest.raises(ConfigError, match="explicit Hessian"):
        B.InfluenceExplicit(tiny["mlp"], tiny["out"].theta, 1e-3, layers="all", max_params=100)


# ---------------------------------------------------------------- TracIn and grad-dot


def test_grad_dot_and_tracin_formulas(tiny):
    mlp, out, cfg = tiny["mlp"], tiny["out"], tiny["cfg"]
    Gq = per_sample_grads(mlp, out.theta, tiny["Xq"], tiny["yq"], "margin")
    Gt = per_sample_grads(mlp, out.theta, tiny["X"], tiny["y"], "loss")
    gd = B.make_method("grad-dot", mlp, [out], cfg).fit(tiny["X"], tiny["y"])
    assert_close(gd.score(tiny["Xq"], tiny["yq"]), (-(Gq @ Gt.T)).float())
    tr = B.make_method("tracin", mlp, [out], cfg).fit(tiny["X"], tiny["y"])
    epochs = sorted(e for e in out.checkpoints if e < cfg.epochs)
    want = torch.zeros(len(tiny["Xq"]), len(tiny["X"]), dtype=torch.float64)
    for e in epochs:  # 5 checkpoints (0..4), each standing for one epoch at lr 0.1
        t = out.checkpoints[e]
        want -= (
            cfg.lr
            / cfg.batch_size
            * (
                per_sample_grads(mlp, t, tiny["Xq"], tiny["yq"], "margin")
                @ per_sample_grads(mlp, t, tiny["X"], tiny["y"], "loss").T
            )
        )
    assert epochs == [0, 1, 2, 3, 4]
    assert_close(tr.score(tiny["Xq"], tiny["yq"]), want.float())


def test_tracin_needs_checkpoints(tiny):
    out = train(tiny["mlp"], tiny["X"], tiny["y"], tiny["cfg"])
    with pytest.raises(ConfigError, match="checkpoint"):
        B.make_method("tracin", tiny["mlp"], [out], tiny["cfg"])


# ------------------------------------------------------------------- sign convention


@pytest.mark.parametrize("method", ["grad-dot", "tracin", "if-explicit", "if-cg", "trak"])
def test_a_duplicate_of_the_query_is_a_strong_proponent(tiny, method):
    """A query that duplicates training example j: j's score is positive and near the top."""
    mlp, out, cfg, X, y = tiny["mlp"], tiny["out"], tiny["cfg"], tiny["X"], tiny["y"]
    js = [3, 40, 77, 101, 130]
    opts = {"proj_dim": 64} if method == "trak" else {}
    a = B.make_method(method, mlp, [out], cfg, **opts).fit(X, y)
    s = a.score(X[js], y[js])
    for row, j in enumerate(js):
        assert s[row, j] > 0, f"{method}: duplicate {j} has score {float(s[row, j])}"
    ranks = [(s[row] > s[row, j]).sum().item() for row, j in enumerate(js)]
    assert np.median(ranks) < 0.1 * len(X), f"{method}: duplicate ranks {ranks}"


def test_random_is_seeded_and_shaped(tiny):
    mk = lambda: B.RandomScores(tiny["mlp"], seed=3).fit(tiny["X"], tiny["y"])  # noqa: E731 - two uses
    a, b = mk().score(tiny["Xq"], tiny["yq"]), mk().score(tiny["Xq"], tiny["yq"])
    assert a.shape == (12, 150) and a.dtype == torch.float32
    assert_close(a, b)


def test_sources_sum_their_members(tiny):
    mlp, out, cfg, X, y = tiny["mlp"], tiny["out"], tiny["cfg"], tiny["X"], tiny["y"]
    per_example = B.make_method("grad-dot", mlp, [out], cfg).fit(X, y).score(tiny["Xq"], tiny["yq"])
    by_class = B.make_method("grad-dot", mlp, [out], cfg).fit(X, y, sources=y.numpy())
    s = by_class.score(tiny["Xq"], tiny["yq"])
    assert s.shape == (12, 10)
    want = torch.stack([per_example[:, y == c].sum(1) for c in range(10)], dim=1)
    assert_close(s, want, rtol=1e-5, atol=1e-6)


def test_timings_and_errors(tiny):
    a = B.make_method("grad-dot", tiny["mlp"], [tiny["out"]], tiny["cfg"])
    with pytest.raises(ConfigError, match="fit"):
        a.score(tiny["Xq"], tiny["yq"])
    a.fit(tiny["X"], tiny["y"])
    a.score(tiny["Xq"], tiny["yq"])
    assert a.timings["setup_seconds"] > 0 and a.timings["n_queries"] == 12
    assert a.seconds_per_query > 0
    with pytest.raises(ConfigError, match="labels"):
        a.score(tiny["Xq"])
    with pytest.raises(ShapeError):
        a.score(tiny["Xq"][:, :10], tiny["yq"])
    with pytest.raises(ConfigError, match="unknown baseline"):
        B.make_method("datamodels", tiny["mlp"], [tiny["out"]], tiny["cfg"])


# ---------------------------------------------------------------------------- TRAK


def test_trak_runs_on_cpu_with_an_ensemble(tiny):
    mlp, cfg = tiny["mlp"], tiny["cfg"]
    runs = B.train_ensemble(mlp, tiny["X"], tiny["y"], cfg, [0, 1])
    a = B.make_method("trak", mlp, runs, cfg, proj_dim=32).fit(tiny["X"], tiny["y"])
    s1 = a.score(tiny["Xq"], tiny["yq"])
    s2 = a.score(tiny["Xq"][:4], tiny["yq"][:4])  # a second experiment on the same features
    assert s1.shape == (12, 150) and s1.dtype == torch.float32 and torch.isfinite(s1).all()
    assert_close(s2, s1[:4], rtol=1e-4, atol=1e-6)
    assert a.meta["lambda_reg"] == 0.0 and a.timings["setup_seconds"] > 0
    save_dir = a.save_dir
    assert save_dir.exists()
    a.close()
    assert not save_dir.exists()


def test_trak_singular_kernel_guard(tiny):
    mlp, out, cfg, X, y = tiny["mlp"], tiny["out"], tiny["cfg"], tiny["X"], tiny["y"]
    with pytest.raises(ConfigError, match="singular"):
        B.make_method("trak", mlp, [out], cfg, proj_dim=256, lambda_reg=0.0).fit(X, y)
    with pytest.warns(UserWarning, match="ill-conditioned"):  # 100 ≥ 150 / 2: honoured, but warned
        B.make_method("trak", mlp, [out], cfg, proj_dim=100, lambda_reg=0.0).fit(X, y)
    a = B.make_method("trak", mlp, [out], cfg, proj_dim=256)
    with pytest.warns(UserWarning, match="ridge"):
        a.fit(X, y)
    s = a.score(tiny["Xq"], tiny["yq"])
    assert a.meta["lambda_reg"] > 0 and torch.isfinite(s).all()
    # a relative ridge is the kernel's mean eigenvalue times r, at any size
    r1 = B.make_method("trak", mlp, [out], cfg, proj_dim=32, ridge=1.0).fit(X, y)
    r2 = B.make_method("trak", mlp, [out], cfg, proj_dim=32, ridge=2.0).fit(X, y)
    assert r2.meta["lambda_reg"] == pytest.approx(2 * r1.meta["lambda_reg"])
    assert a.meta["lambda_reg"] == pytest.approx(methods_base.AUTO_RIDGE * r1.meta["lambda_reg"])
    with pytest.raises(ConfigError, match="not both"):
        B.make_method("trak", mlp, [out], cfg, ridge=1.0, lambda_reg=1.0)
    # the ridge makes the scores those of a well-posed regression: duplicates still win
    js = [3, 40, 77]
    d = a.score(X[js], y[js])
    assert all(d[r, j] > 0 for r, j in enumerate(js))


def test_trak_kernel_scale_is_the_mean_gradient_norm(tiny):
    """E trace(ΦᵀΦ)/k for traker's N(0,1) sketch scaled by 1/sqrt(p) is Σ_i ‖∇f_i‖² / p."""
    mlp, out, X, y = tiny["mlp"], tiny["out"], tiny["X"], tiny["y"]
    G = per_sample_grads(mlp, out.theta, X, y, "margin")
    a = B.TRAK(mlp, [out.theta], proj_dim=16)
    assert a._mean_eigenvalue(X, y) == pytest.approx(float((G * G).sum()) / mlp.n_params, rel=1e-5)


def test_cli_attribute_with_baselines(tmp_path, monkeypatch, capsys):
    from attrcore.cli.main import main

    monkeypatch.setenv("ATTRCORE_HOME", str(tmp_path / "home"))
    base = [
        "attribute",
        "--train",
        "moons",
        "--n-samples",
        "120",
        "--hidden",
        "8",
        "--epochs",
        "2",
        "--batch-size",
        "16",
    ]
    for method, extra in [
        ("grad-dot", []),
        ("if", ["--if-solver", "cg"]),
        ("tracin", []),
        ("trak", ["--ensemble", "2", "--proj-dim", "16"]),
    ]:
        out = tmp_path / f"{method}.npy"
        assert main([*base, "--method", method, *extra, "--out", str(out)]) == 0, method
        s = np.load(out)
        assert s.shape == (24, 96) and s.dtype == np.float32 and np.isfinite(s).all()
    assert "top proponents" in capsys.readouterr().out
    assert main([*base, "--method", "trak", "--ensemble", "0"]) == 2
    assert "ensemble" in capsys.readouterr().err


def test_trak_is_margin_only(tiny):
    with pytest.raises(ConfigError, match="margin"):
        B.make_method("trak", tiny["mlp"], [tiny["out"]], tiny["cfg"], measure="loss")
