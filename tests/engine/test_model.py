"""The functional MLP over a flat parameter vector, and the per-layer tangent stack."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from attrcore.engine import Tangents
from attrcore.engine.model import ACTIVATIONS, MLP, MLPConfig, act, act_derivs
from attrcore.errors import ConfigError, ShapeError

HIDDEN = [(), (5,), (5, 4)]


def make_mlp(hidden=(5,), activation="tanh", d=3, C=3) -> MLP:
    return MLP(MLPConfig(d, C, hidden, activation))


def random_theta(mlp: MLP, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(mlp.n_params, generator=g, dtype=torch.float64)


# ---- configuration ----------------------------------------------------------------------


def test_config_sizes_and_round_trip():
    cfg = MLPConfig(64, 10, [128, 32], "gelu")
    assert cfg.hidden == (128, 32)
    assert cfg.sizes == (64, 128, 32, 10)
    assert cfg.n_params == 64 * 128 + 128 + 128 * 32 + 32 + 32 * 10 + 10
    assert MLPConfig.from_dict(cfg.to_dict()) == cfg
    assert MLPConfig(4, 3, ()).n_params == 4 * 3 + 3  # logistic regression


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"input_dim": 0, "n_classes": 3}, "input_dim"),
        ({"input_dim": 4, "n_classes": 1}, "two or more classes"),
        ({"input_dim": 4, "n_classes": 3, "hidden": (8, 0)}, "hidden"),
        ({"input_dim": 4, "n_classes": 3, "activation": "sigmoid"}, "relu"),
    ],
)
def test_config_rejects_impossible_shapes(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        MLPConfig(**kwargs)


# ---- layout -----------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", HIDDEN)
def test_unflatten_gives_zero_copy_views_in_row_major_layer_order(hidden):
    mlp = make_mlp(hidden)
    assert mlp.n_params == mlp.config.n_params
    theta = torch.arange(mlp.n_params, dtype=torch.float64)
    layers = mlp.unflatten(theta)
    sizes = mlp.config.sizes
    off = 0
    for i, (W, b) in enumerate(layers):
        assert W.shape == (sizes[i + 1], sizes[i])
        assert b.shape == (sizes[i + 1],)
        # [W_1, b_1, W_2, b_2, ...], each W row-major
        assert_close(W.reshape(-1), theta[off : off + W.numel()], rtol=0, atol=0)
        off += W.numel()
        assert_close(b, theta[off : off + b.numel()], rtol=0, atol=0)
        off += b.numel()
        assert W.data_ptr() >= theta.data_ptr()  # a view, not a copy
    assert off == mlp.n_params
    layers[0][0][0, 0] = -1.0
    assert theta[0] == -1.0


def test_unflatten_handles_a_leading_stack_axis():
    mlp = make_mlp((5, 4))
    stack = torch.randn(6, mlp.n_params, dtype=torch.float64)
    for k in range(6):
        for (Ws, bs), (W, b) in zip(mlp.unflatten(stack), mlp.unflatten(stack[k])):
            assert torch.equal(Ws[k], W)
            assert torch.equal(bs[k], b)


# ---- forward ----------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_forward_matches_nn_sequential(tiny, activation, hidden):
    mlp = make_mlp(hidden, activation, d=tiny.d, C=tiny.n_classes)
    theta = random_theta(mlp)
    module = mlp.to_module(theta)
    with torch.no_grad():
        expected = module(tiny.X)
    assert_close(mlp.forward(theta, tiny.X), expected)
    assert torch.equal(mlp.flatten_module(module), theta)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_forward_cache_is_consistent_with_forward(tiny, activation, hidden):
    mlp = make_mlp(hidden, activation, d=tiny.d, C=tiny.n_classes)
    theta = random_theta(mlp, scale=2.0)
    cache = mlp.forward_cache(theta, tiny.X, need_second=True)
    assert_close(cache.logits, mlp.forward(theta, tiny.X), rtol=0, atol=0)
    assert len(cache.acts) == len(hidden) + 1 and len(cache.pre) == len(hidden) + 1
    assert cache.acts[0] is tiny.X
    for layer in range(len(hidden)):
        assert_close(cache.acts[layer + 1], act(activation, cache.pre[layer]))
        d1, d2 = act_derivs(activation, cache.pre[layer], need_second=True)
        assert_close(cache.d1[layer], d1)
        if d2 is None:
            assert cache.d2[layer] is None
        else:
            assert_close(cache.d2[layer], d2)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_derivatives_match_autograd(activation):
    # avoid z = 0 exactly, where relu's derivative is a convention
    z = torch.linspace(-4, 4, 81, dtype=torch.float64) + 1e-3

    def f(t):
        return act(activation, t)

    first = torch.func.vmap(torch.func.grad(f))(z)
    second = torch.func.vmap(torch.func.grad(torch.func.grad(f)))(z)
    d1, d2 = act_derivs(activation, z, need_second=True)
    assert_close(d1, first)
    if activation == "relu":
        assert d2 is None  # zero almost everywhere: skipped by the exact Hessian
        assert_close(second, torch.zeros_like(z))
    else:
        assert_close(d2, second)
    assert act_derivs(activation, z, need_second=False)[1] is None


def test_check_input_rejects_wrong_feature_count():
    mlp = make_mlp(d=3)
    mlp.check_input(torch.zeros(2, 3))
    with pytest.raises(ShapeError, match=r"expects \[n, 3\]"):
        mlp.check_input(torch.zeros(2, 4))
    with pytest.raises(ShapeError, match="same features"):
        mlp.check_input(torch.zeros(3))


# ---- initialisation ---------------------------------------------------------------------


def test_init_is_seeded_and_matches_nn_linear_bounds():
    mlp = make_mlp((6, 5), d=4)
    a = mlp.init(torch.Generator().manual_seed(3), torch.float64)
    b = mlp.init(torch.Generator().manual_seed(3), torch.float64)
    c = mlp.init(torch.Generator().manual_seed(4), torch.float64)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    for W, bias in mlp.unflatten(a):
        bound = 1.0 / math.sqrt(W.shape[1])
        assert W.abs().max() <= bound and bias.abs().max() <= bound
    # float32 parameters are the float64 draws rounded: the same model in both precisions
    f32 = mlp.init(torch.Generator().manual_seed(3), torch.float32)
    assert f32.dtype == torch.float32
    assert torch.equal(f32, a.float())


# ---- tangents ---------------------------------------------------------------------------


def test_tangents_round_trip_and_views():
    mlp = make_mlp((5, 4))
    flat = torch.randn(7, mlp.n_params, dtype=torch.float64)
    T = Tangents.from_flat(mlp, flat)
    assert len(T) == 7 and T.n_params == mlp.n_params and T.dtype == torch.float64
    assert all(t.is_contiguous() for t in T.blocks())
    assert torch.equal(T.flat(), flat)
    assert T.nbytes() == flat.numel() * 8
    view = T.rows(slice(2, 5))
    view.zero_()
    assert torch.equal(T.flat()[2:5], torch.zeros(3, mlp.n_params, dtype=torch.float64))
    assert torch.equal(T.flat()[:2], flat[:2])
    idx = torch.tensor([6, 0])
    assert torch.equal(T.select(idx).flat(), T.flat()[idx])
    assert T.to(torch.float32).dtype == torch.float32


def test_tangents_arithmetic_matches_flat_arithmetic():
    mlp = make_mlp((5,))
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, mlp.n_params, generator=g, dtype=torch.float64)
    b = torch.randn(5, mlp.n_params, generator=g, dtype=torch.float64)
    A, B = Tangents.from_flat(mlp, a), Tangents.from_flat(mlp, b)
    assert_close(A.clone().add_(B, alpha=-0.5).flat(), a - 0.5 * b)
    assert_close(A.clone().mul_(3.0).flat(), 3.0 * a)
    assert_close(A.clone().copy_(B, alpha=2.0).flat(), 2.0 * b)
    # index_add_ with a repeated index accumulates, exactly like a loop
    idx = torch.tensor([1, 1, 4])
    expected = a.clone()
    for k, i in enumerate(idx.tolist()):
        expected[i] += 0.25 * b[k]
    assert_close(A.clone().index_add_(idx, B.rows(slice(0, 3)), alpha=0.25).flat(), expected)
    out = Tangents.zeros(mlp, 5, torch.float64).index_copy_(torch.tensor([3, 0]), B.rows(slice(0, 2)))
    assert torch.equal(out.flat()[3], b[0]) and torch.equal(out.flat()[0], b[1])
    assert A.isfinite()
    A.W[0][0, 0, 0] = float("nan")
    assert not A.isfinite()


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    T=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_tangents_from_flat_is_the_inverse_of_flat(sizes, T, seed):
    mlp = MLP(MLPConfig(sizes[0], max(2, sizes[-1]), tuple(sizes[1:-1])))
    flat = torch.randn(T, mlp.n_params, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    stack = Tangents.from_flat(mlp, flat)
    assert torch.equal(stack.flat(), flat)
    for (W, b), (Wf, bf) in zip(zip(stack.W, stack.b), mlp.unflatten(flat)):
        assert torch.equal(W, Wf) and torch.equal(b, bf)
