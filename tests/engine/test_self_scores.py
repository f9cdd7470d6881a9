"""Self-influence as a diagonal: ``self_scores`` equals the diagonal of the full score
matrix (and of the reverse-mode oracle ⟨∇f(z_i), Δ_i⟩), makes no reverse-mode call, and
reads grouped sources out against each point's own group."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine.measures import measure
from attrcore.engine.model import MLP, MLPConfig
from attrcore.engine.readout import score, self_scores
from attrcore.engine.tangents import Tangents
from attrcore.engine.train import train
from attrcore.errors import ShapeError


def trained(tiny, hidden=(5, 4), activation="tanh", source_index=None, n_sources=None):
    mlp = MLP(MLPConfig(tiny.d, tiny.n_classes, hidden, activation))
    cfg = TrainConfig(epochs=2, lr=0.3, batch_size=8, dtype="float64")
    out = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(), source_index=source_index, n_sources=n_sources)
    return mlp, out.theta, out.responses


def oracle_diagonal(mlp, theta, R, X, y, kind, rows):
    """The slow obvious version: per point, reverse-mode ∇f(z_i) · Δ_{rows[i]} (float64)."""
    out = []
    for i in range(X.shape[0]):
        x_i, y_i = X[i : i + 1], y[i : i + 1]
        g = torch.func.grad(lambda t, x_i=x_i, y_i=y_i: measure(mlp.forward(t, x_i), y_i, kind).sum())(theta)
        out.append(g @ R[rows[i]])
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["loss", "margin", "prob"])
@pytest.mark.parametrize(("hidden", "activation"), [((5, 4), "tanh"), ((6,), "relu"), ((), "gelu")])
def test_self_scores_equal_the_diagonal_of_the_full_matrix(tiny, kind, hidden, activation):
    mlp, theta, R = trained(tiny, hidden, activation)
    full = score(mlp, theta, R, tiny.X, tiny.y, measure=kind)  # [n, n]
    got = self_scores(mlp, theta, R, tiny.X, tiny.y, measure=kind)
    assert got.shape == (tiny.n,) and got.dtype == torch.float32
    assert_close(got, torch.diagonal(full))
    expected = oracle_diagonal(mlp, theta, R, tiny.X, tiny.y, kind, torch.arange(tiny.n))
    assert_close(got.double(), expected, rtol=1e-5, atol=1e-7)


def test_chunking_and_a_tangent_stack_do_not_change_the_result(tiny):
    mlp, theta, R = trained(tiny)
    whole = self_scores(mlp, theta, R, tiny.X, tiny.y)
    tiny_chunks = self_scores(mlp, theta, Tangents.from_flat(mlp, R), tiny.X, tiny.y, memory_budget_mb=1e-6)
    assert_close(tiny_chunks, whole)


def test_grouped_sources_read_each_point_against_its_own_group(tiny):
    mlp, theta, R = trained(tiny, source_index=tiny.groups, n_sources=tiny.n_groups)  # R [5, p]
    full = score(mlp, theta, R, tiny.X, tiny.y, measure="loss")  # [n, 5]
    got = self_scores(mlp, theta, R, tiny.X, tiny.y, measure="loss", source_index=tiny.groups)
    assert_close(got, full[torch.arange(tiny.n), tiny.groups])
    with pytest.raises(ShapeError, match="source_index"):
        self_scores(mlp, theta, R, tiny.X, tiny.y)  # 5 sources for 24 points: which is whose?
    with pytest.raises(ShapeError, match="outside"):
        self_scores(mlp, theta, R, tiny.X, tiny.y, source_index=tiny.groups + 1)


def test_self_scores_make_no_reverse_mode_call(tiny, monkeypatch):
    mlp, theta, R = trained(tiny)
    expected = torch.diagonal(score(mlp, theta, R, tiny.X, tiny.y, measure="loss"))

    def trap(*args, **kwargs):
        raise AssertionError("reverse-mode autograd was called")

    monkeypatch.setattr(torch.autograd, "grad", trap)
    monkeypatch.setattr(torch.autograd, "backward", trap)
    monkeypatch.setattr(torch.Tensor, "backward", trap)
    with pytest.raises(AssertionError, match="reverse-mode"):
        torch.func.grad(lambda t: (t * t).sum())(theta)  # the trap is armed
    assert_close(self_scores(mlp, theta, R, tiny.X, tiny.y, measure="loss"), expected)


def test_a_mislabeled_point_has_the_largest_self_influence():
    """Known answer: two well-separated blobs, one point given the other blob's label; it
    is the point whose own response moves its own loss most."""
    g = torch.Generator().manual_seed(1)
    X = torch.cat(
        [
            torch.randn(20, 2, generator=g, dtype=torch.float64) - 3,
            torch.randn(20, 2, generator=g, dtype=torch.float64) + 3,
        ]
    )
    y = torch.cat([torch.zeros(20), torch.ones(20)]).long()
    y[7] = 1  # a blob-0 point labelled 1
    mlp = MLP(MLPConfig(2, 2, (8,), "tanh"))
    out = train(mlp, X, y, TrainConfig(epochs=20, lr=0.2, batch_size=8, dtype="float64"), SimulationConfig())
    tau = self_scores(mlp, out.theta, out.responses, X, y, measure="loss")
    assert bool((tau < 0).all())  # up-weighting a point lowers its own loss
    assert int(torch.argmin(tau)) == 7


def test_compressed_responses_read_out_the_same_diagonal(tiny):
    """Δ ≈ C Qᵀ at full rank is exact: r JVPs per point give the dense diagonal."""
    from attrcore.engine.compress import compress_dense

    mlp, theta, R = trained(tiny)
    packed = compress_dense(Tangents.from_flat(mlp, R), rank=tiny.n)
    dense = self_scores(mlp, theta, R, tiny.X, tiny.y, measure="loss")
    got = self_scores(mlp, theta, packed, tiny.X, tiny.y, measure="loss")
    assert_close(got, dense, rtol=1e-5, atol=1e-6 * float(dense.abs().max()))
