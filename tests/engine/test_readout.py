"""The forward-only readout: central difference ≈ JVP ≈ ⟨∇f, Δ⟩ by reverse mode, and no
reverse-mode call at query time.

The reverse-mode oracle lives only in the tests: J = jacrev(f)(θ̂) ``[Q, p]``, τ = J Δᵀ.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from attrcore import fit, load_dataset
from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine import Tangents, readout, score, train
from attrcore.engine.measures import MEASURES, measure, measure_dlogits
from attrcore.engine.model import ACTIVATIONS, MLP, MLPConfig
from attrcore.errors import ConfigError, ShapeError
from attrcore.run import TrainedRun
from attrcore.store import RunStore

# measure -> target class (logit / prob with an explicit class; margin / loss use the label)
MEASURE_CASES = [("margin", None), ("loss", None), ("logit", 1), ("prob", 2), ("logit", None), ("prob", None)]


def trained(tiny, activation="tanh", hidden=(5,), dtype="float64", momentum=0.0):
    mlp = MLP(MLPConfig(tiny.d, tiny.n_classes, hidden, activation))
    cfg = TrainConfig(epochs=2, lr=0.3, batch_size=8, momentum=momentum, dtype=dtype)
    X = tiny.X.to(torch.float64 if dtype == "float64" else torch.float32)
    out = train(mlp, X, tiny.y, cfg, SimulationConfig())
    return mlp, out.theta, out.responses


def reverse_mode_scores(mlp, theta, responses, X, y, kind, target_class):
    """⟨∇_θ f(z_q; θ̂), Δ_j⟩ with ∇f from reverse-mode autograd: ``[Q, m]``."""

    def f(t):
        return measure(mlp.forward(t, X), y, kind, target_class)

    J = torch.func.jacrev(f)(theta.double())  # [Q, p]
    return J @ responses.double().T


# ---- the measurements -------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "target_class"), MEASURE_CASES)
def test_measure_derivative_in_the_logits_matches_autograd(kind, target_class):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 2])
    # each f_q depends on row q only, so the gradient of the sum holds every row's ∂f_q/∂z_q
    expected = torch.func.grad(lambda z: measure(z, y, kind, target_class).sum())(logits)
    assert_close(measure_dlogits(logits, y, kind, target_class), expected)


def test_measure_values():
    logits = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([0])
    assert_close(measure(logits, y, "margin"), 2.0 - torch.logsumexp(logits[:, 1:], 1))
    assert_close(measure(logits, y, "loss"), torch.logsumexp(logits, 1) - 2.0)
    assert_close(measure(logits, y, "logit", target_class=2), torch.tensor([-1.0], dtype=torch.float64))
    assert_close(measure(logits, y, "prob"), torch.softmax(logits, 1)[:, 0])
    # margin > 0 exactly when the true class wins: TRAK's convention
    assert measure(logits, y, "margin") > 0 > measure(logits, torch.tensor([1]), "margin")


# ---- readout = reverse-mode inner product -----------------------------------------------


@pytest.mark.parametrize("backend", ["mlp", "func"])
@pytest.mark.parametrize("readout_kind", ["jvp", "cd"])
@pytest.mark.parametrize(("kind", "target_class"), MEASURE_CASES)
@pytest.mark.parametrize(("activation", "hidden"), [("relu", (5,)), ("tanh", (5, 4)), ("gelu", ())])
def test_readout_matches_the_reverse_mode_inner_product_float64(
    tiny, activation, hidden, kind, target_class, readout_kind, backend
):
    mlp, theta, R = trained(tiny, activation, hidden)
    got = score(
        mlp, theta, R, tiny.X_query, tiny.y_query, kind, readout_kind, target_class=target_class, backend=backend
    )
    assert got.shape == (len(tiny.X_query), tiny.n) and got.dtype == torch.float32
    expected = reverse_mode_scores(mlp, theta, R, tiny.X_query, tiny.y_query, kind, target_class)
    scale = float(expected.abs().max())
    assert scale > 1e-4
    # float32 output: only its rounding separates the three
    assert_close(got.double(), expected, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("backend", ["mlp", "func"])
@pytest.mark.parametrize("readout_kind", ["jvp", "cd"])
@pytest.mark.parametrize(("kind", "target_class"), MEASURE_CASES[:4])
def test_readout_matches_the_reverse_mode_inner_product_float32(tiny, kind, target_class, readout_kind, backend):
    mlp, theta, R = trained(tiny, "gelu", (5, 4), dtype="float32")
    Xq = tiny.X_query.float()
    got = score(mlp, theta, R, Xq, tiny.y_query, kind, readout_kind, target_class=target_class, backend=backend)
    expected = reverse_mode_scores(mlp, theta, R, Xq.double(), tiny.y_query, kind, target_class)
    scale = float(expected.abs().max())
    tol = 1e-4 if readout_kind == "jvp" else 3e-3  # cd: ε = 1e-3·‖θ‖ steps in float32
    assert_close(got.double(), expected, rtol=tol, atol=tol * scale)


def test_central_difference_and_jvp_agree_on_a_momentum_run(tiny):
    mlp, theta, R = trained(tiny, "relu", (5, 4), momentum=0.9)
    jvp = score(mlp, theta, R, tiny.X_query, tiny.y_query, readout="jvp")
    cd = score(mlp, theta, R, tiny.X_query, tiny.y_query, readout="cd")
    assert_close(cd, jvp, rtol=1e-5, atol=1e-6 * float(jvp.abs().max()))


# ---- invariances ------------------------------------------------------------------------


@pytest.mark.parametrize("readout_kind", ["jvp", "cd"])
def test_scoring_in_batches_equals_scoring_at_once(tiny, readout_kind):
    mlp, theta, R = trained(tiny, "gelu", (5, 4))
    Xq, yq = tiny.X_query, tiny.y_query
    whole = score(mlp, theta, R, Xq, yq, readout=readout_kind)
    halves = torch.cat(
        [
            score(mlp, theta, R, Xq[:3], yq[:3], readout=readout_kind),
            score(mlp, theta, R, Xq[3:], yq[3:], readout=readout_kind),
        ]
    )
    assert_close(halves, whole)
    one_by_one = torch.cat(
        [score(mlp, theta, R, Xq[q : q + 1], yq[q : q + 1], readout=readout_kind) for q in range(len(Xq))]
    )
    assert_close(one_by_one, whole)
    # a subset of the sources gives the same columns
    assert_close(score(mlp, theta, R[5:11], Xq, yq, readout=readout_kind), whole[:, 5:11])
    # the per-layer stack and the flat rows are the same responses
    assert_close(score(mlp, theta, Tangents.from_flat(mlp, R), Xq, yq, readout=readout_kind), whole, rtol=0, atol=0)


@pytest.mark.parametrize("readout_kind", ["jvp", "cd"])
def test_tiny_cache_chunks_give_the_same_scores(tiny, monkeypatch, readout_kind):
    mlp, theta, R = trained(tiny, "tanh", (5, 4))
    whole = score(mlp, theta, R, tiny.X_query, tiny.y_query, readout=readout_kind)
    monkeypatch.setattr(readout, "CACHE_BYTES", 1)  # one source per chunk
    assert readout._sources_per_chunk(mlp, len(tiny.X_query), 8, 2**30, 2) == 1
    assert_close(score(mlp, theta, R, tiny.X_query, tiny.y_query, readout=readout_kind), whole)
    assert_close(score(mlp, theta, R, tiny.X_query, tiny.y_query, readout=readout_kind, memory_budget_mb=1e-6), whole)


def test_half_precision_responses_score_like_the_full_precision_ones(tiny):
    mlp, theta, R = trained(tiny, "tanh", (5,), dtype="float32")
    Xq = tiny.X_query.float()
    full = score(mlp, theta, R, Xq, tiny.y_query)
    half = score(mlp, theta, R.half(), Xq, tiny.y_query)
    assert_close(half, full, rtol=5e-3, atol=5e-3 * float(full.abs().max()))


def test_readout_is_linear_in_the_responses(tiny):
    mlp, theta, R = trained(tiny)
    groups = torch.nn.functional.one_hot(tiny.groups).T.double()  # [m, n]
    per_example = score(mlp, theta, R, tiny.X_query, tiny.y_query)
    grouped = score(mlp, theta, groups @ R, tiny.X_query, tiny.y_query)
    assert_close(grouped.double(), per_example.double() @ groups.T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["mlp", "func"])
@pytest.mark.parametrize("readout_kind", ["jvp", "cd"])
def test_a_zero_response_scores_exactly_zero(tiny, readout_kind, backend):
    # e.g. a class source emptied by label noise: the per-source ε of cd must not blow up
    mlp, theta, R = trained(tiny)
    R = R.clone()
    R[3] = 0.0
    got = score(mlp, theta, R, tiny.X_query, tiny.y_query, readout=readout_kind, backend=backend)
    assert torch.isfinite(got).all()
    assert_close(got[:, 3], torch.zeros(len(tiny.X_query)), rtol=0, atol=0)


# ---- no reverse mode at query time ------------------------------------------------------


class ReverseModeCalled(AssertionError):
    pass


def _trap(*args, **kwargs):
    raise ReverseModeCalled("reverse-mode autograd was called")


@pytest.fixture
def forbid_reverse_mode(monkeypatch):
    """Make every reverse-mode entry point raise (torch.func.grad/vjp go through autograd.grad)."""

    def trap(*args, **kwargs):
        raise ReverseModeCalled("reverse-mode autograd was called")

    def arm():
        monkeypatch.setattr(torch.autograd, "grad", trap)
        monkeypatch.setattr(torch.autograd, "backward", trap)
        monkeypatch.setattr(torch.Tensor, "backward", trap)

    return arm


def test_the_reverse_mode_trap_works(forbid_reverse_mode):
    forbid_reverse_mode()
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ReverseModeCalled):
        (x * x).sum().backward()
    with pytest.raises(ReverseModeCalled):
        torch.autograd.grad((x * x).sum(), x)
    with pytest.raises(ReverseModeCalled):
        torch.func.grad(lambda t: (t * t).sum())(x.detach())
    with pytest.raises(ReverseModeCalled):
        torch.func.jacrev(lambda t: t * t)(x.detach())


@pytest.mark.parametrize(("kind", "target_class"), MEASURE_CASES[:4])
def test_readout_makes_no_reverse_mode_call(tiny, forbid_reverse_mode, kind, target_class):
    mlp, theta, R = trained(tiny, "gelu", (5, 4))
    expected = reverse_mode_scores(mlp, theta, R, tiny.X_query, tiny.y_query, kind, target_class)
    forbid_reverse_mode()
    for readout_kind, backend in itertools.product(["jvp", "cd"], ["mlp", "func"]):
        got = score(mlp, theta, R, tiny.X_query, tiny.y_query, kind, readout_kind, target_class, backend=backend)
        assert_close(got.double(), expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


@pytest.mark.parametrize("horizon", [None, 2])
def test_compressed_readout_makes_no_reverse_mode_call(tiny, forbid_reverse_mode, horizon):
    mlp = MLP(MLPConfig(tiny.d, tiny.n_classes, (5, 4), "gelu"))
    cfg = TrainConfig(epochs=2, lr=0.3, batch_size=8, momentum=0.9, dtype="float64")
    out = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(horizon=horizon, rank=4))
    comp = out.responses
    expected = reverse_mode_scores(mlp, out.theta, comp.dense(), tiny.X_query, tiny.y_query, "margin", None)
    forbid_reverse_mode()
    for readout_kind, backend in itertools.product(["jvp", "cd"], ["mlp", "func"]):
        got = score(mlp, out.theta, comp, tiny.X_query, tiny.y_query, "margin", readout_kind, backend=backend)
        assert_close(got.double(), expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


def test_a_saved_run_scores_without_reverse_mode():
    ds = load_dataset("moons", n_samples=60)
    for rank in (None, 6):
        run = fit(
            ds, hidden=(6,), train_config=TrainConfig(epochs=2, batch_size=16), simulation=SimulationConfig(rank=rank)
        )
        assert run.compressed == (rank is not None)
        run.save(RunStore(), f"no-reverse-{rank}")
        expected = {r: run.score(ds.X_test, ds.y_test, readout=r) for r in ("jvp", "cd")}
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch.autograd, "grad", _trap)
            mp.setattr(torch.autograd, "backward", _trap)
            mp.setattr(torch.Tensor, "backward", _trap)
            loaded = TrainedRun.load(RunStore(), f"no-reverse-{rank}")
            for r in ("jvp", "cd"):
                for which in (run, loaded):
                    got = which.score(ds.X_test, ds.y_test, readout=r)
                    assert isinstance(got, np.ndarray) and got.shape == (ds.n_test, ds.n_train)
                    assert_close(torch.from_numpy(got), torch.from_numpy(expected[r]))


# ---- errors -----------------------------------------------------------------------------


def test_readout_errors_name_the_problem(tiny):
    mlp, theta, R = trained(tiny)
    Xq, yq = tiny.X_query, tiny.y_query
    with pytest.raises(ConfigError, match="unknown readout"):
        score(mlp, theta, R, Xq, yq, readout="reverse")
    with pytest.raises(ConfigError, match="unknown measurement"):
        score(mlp, theta, R, Xq, yq, measure="accuracy")
    with pytest.raises(ConfigError, match="labels"):
        score(mlp, theta, R, Xq, None, measure="margin")
    with pytest.raises(ConfigError, match="out of range"):
        score(mlp, theta, R, Xq, yq, measure="logit", target_class=tiny.n_classes)
    with pytest.raises(ShapeError, match="responses have"):
        score(mlp, theta, R[:, :-1], Xq, yq)
    with pytest.raises(ShapeError, match="one label per query"):
        score(mlp, theta, R, Xq, yq[:-1])
    with pytest.raises(ShapeError, match="same features"):
        score(mlp, theta, R, Xq[:, :2], yq)
    # no labels is fine when the measurement names its class
    assert score(mlp, theta, R, Xq, None, measure="prob", target_class=0).shape == (len(Xq), tiny.n)


def test_measures_are_the_documented_set():
    assert set(MEASURES) == {"margin", "loss", "logit", "prob"}
    assert set(ACTIVATIONS) == {"relu", "tanh", "gelu"}
