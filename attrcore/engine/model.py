"""The MLP, written functionally over one flat parameter vector.

Parameters live in a single vector ``theta [p]`` laid out layer by layer as
``[W_1, b_1, W_2, b_2, ...]`` with ``W_l [d_l, d_{l-1}]`` (row-major, as ``nn.Linear``).
A source's parameter response is a vector of the same layout, so a stack of responses is
simply ``[m, p]`` and every layer of every response is a zero-copy view
(:meth:`MLP.unflatten`). The simulation engine and the readout work layer by layer on
these views; :meth:`MLP.to_module` gives an ordinary ``nn.Sequential`` for baselines
(TRAK) that need one.

No hidden layers means multinomial logistic regression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ShapeError

ACTIVATIONS = ("relu", "tanh", "gelu")

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class MLPConfig:
    """Shape of the network: ``input_dim -> hidden... -> n_classes``."""

    input_dim: int
    n_classes: int
    hidden: tuple[int, ...] = (128,)
    activation: str = "relu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.input_dim < 1:
            raise ConfigError(f"input_dim must be at least 1, got {self.input_dim}.")
        if self.n_classes < 2:
            raise ConfigError(
                f"n_classes must be at least 2, got {self.n_classes}; "
                "a classifier needs two or more classes in the labels."
            )
        if any(h < 1 for h in self.hidden):
            raise ConfigError(
                f"hidden sizes must be positive, got {list(self.hidden)}; use an empty list for logistic regression."
            )
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}.")

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.input_dim, *self.hidden, self.n_classes)

    @property
    def n_params(self) -> int:
        s = self.sizes
        return sum(s[i + 1] * s[i] + s[i + 1] for i in range(len(s) - 1))

    def to_dict(self) -> dict:
        return {
            "input_dim": self.input_dim,
            "n_classes": self.n_classes,
            "hidden": list(self.hidden),
            "activation": self.activation,
        }

    @classmethod
    def from_dict(cls, d: dict) -> MLPConfig:
        return cls(
            input_dim=int(d["input_dim"]),
            n_classes=int(d["n_classes"]),
            hidden=tuple(d.get("hidden", ())),
            activation=d.get("activation", "relu"),
        )


def act(name: str, z: Tensor) -> Tensor:
    if name == "relu":
        return torch.relu(z)
    if name == "tanh":
        return torch.tanh(z)
    return torch.nn.functional.gelu(z)  # exact (erf) GELU


def act_derivs(name: str, z: Tensor, need_second: bool = False) -> tuple[Tensor, Tensor | None]:
    """σ'(z) and (when asked and non-zero) σ''(z), elementwise."""
    if name == "relu":
        return (z > 0).to(z.dtype), None
    if name == "tanh":
        t = torch.tanh(z)
        d1 = 1.0 - t * t
        return d1, (-2.0 * t * d1 if need_second else None)
    # gelu(z) = z Φ(z):  σ' = Φ + z φ,  σ'' = φ (2 - z²)
    phi = torch.exp(-0.5 * z * z) * _INV_SQRT_2PI
    cdf = 0.5 * (1.0 + torch.erf(z * _SQRT_HALF))
    return cdf + z * phi, (phi * (2.0 - z * z) if need_second else None)


@dataclass
class ForwardCache:
    """Activations of one forward pass, kept for backprop and curvature products.

    ``acts[l]`` is the input of layer ``l`` (``acts[0]`` is X, ``[B, d_0]``);
    ``pre[l]`` is layer l's pre-activation ``[B, d_{l+1}]``; ``pre[-1]`` are the logits.
    """

    acts: list[Tensor]
    pre: list[Tensor]
    d1: list[Tensor] = field(default_factory=list)  # σ'(pre[l]) for hidden layers
    d2: list[Tensor | None] = field(default_factory=list)  # σ''(pre[l]) or None

    @property
    def logits(self) -> Tensor:
        return self.pre[-1]


class MLP:
    """Functional MLP over a flat parameter vector (see module docstring)."""

    def __init__(self, config: MLPConfig):
        self.config = config
        self.activation = config.activation
        sizes = config.sizes
        self.n_layers = len(sizes) - 1
        # (w_start, w_end, b_end, d_out, d_in) per layer
        self.layout: list[tuple[int, int, int, int, int]] = []
        off = 0
        for i in range(self.n_layers):
            d_in, d_out = sizes[i], sizes[i + 1]
            w_end = off + d_out * d_in
            b_end = w_end + d_out
            self.layout.append((off, w_end, b_end, d_out, d_in))
            off = b_end
        self.n_params = off

    # ---- parameters -------------------------------------------------------------------
    def init(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
        """``nn.Linear``'s default initialisation, U(±1/sqrt(fan_in)), drawn from ``generator``."""
        theta = torch.empty(self.n_params, dtype=torch.float64)
        for w0, _w1, b1, _d_out, d_in in self.layout:
            bound = 1.0 / math.sqrt(d_in)
            theta[w0:b1].uniform_(-bound, bound, generator=generator)
        return theta.to(dtype)

    def unflatten(self, theta: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Views ``(W [..., d_out, d_in], b [..., d_out])`` per layer of ``theta [..., p]``."""
        lead = theta.shape[:-1]
        return [
            (theta[..., w0:w1].view(*lead, d_out, d_in), theta[..., w1:b1]) for w0, w1, b1, d_out, d_in in self.layout
        ]

    def check_input(self, X: Tensor) -> None:
        if X.ndim != 2 or X.shape[1] != self.config.input_dim:
            raise ShapeError(
                f"inputs have shape {tuple(X.shape)} but the model expects [n, {self.config.input_dim}]; "
                "use queries with the same features as the training data."
            )

    # ---- forward ----------------------------------------------------------------------
    def forward(self, theta: Tensor, X: Tensor) -> Tensor:
        """Logits ``[B, C]`` for inputs ``X [B, d_0]`` at parameters ``theta [p]``."""
        a = X
        layers = self.unflatten(theta)
        for i, (W, b) in enumerate(layers):
            z = torch.addmm(b, a, W.T)
            a = act(self.activation, z) if i < self.n_layers - 1 else z
        return a

    def forward_cache(self, theta: Tensor, X: Tensor, need_second: bool = False) -> ForwardCache:
        cache = ForwardCache(acts=[X], pre=[])
        a = X
        for i, (W, b) in enumerate(self.unflatten(theta)):
            z = torch.addmm(b, a, W.T)
            cache.pre.append(z)
            if i < self.n_layers - 1:
                d1, d2 = act_derivs(self.activation, z, need_second)
                cache.d1.append(d1)
                cache.d2.append(d2)
                a = act(self.activation, z)
                cache.acts.append(a)
        return cache

    def to_module(self, theta: Tensor) -> nn.Sequential:
        """An ``nn.Sequential`` holding a copy of ``theta`` (for code that needs a module)."""
        mods: list[nn.Module] = []
        act_mod = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}[self.activation]
        for i, (W, b) in enumerate(self.unflatten(theta.detach())):
            lin = nn.Linear(W.shape[1], W.shape[0], dtype=theta.dtype)
            with torch.no_grad():
                lin.weight.copy_(W)
                lin.bias.copy_(b)
            mods.append(lin)
            if i < self.n_layers - 1:
                mods.append(act_mod())
        return nn.Sequential(*mods)

    def flatten_module(self, module: nn.Sequential) -> Tensor:
        """Inverse of :meth:`to_module`."""
        lins = [m for m in module if isinstance(m, nn.Linear)]
        return torch.cat([t.detach().reshape(-1) for lin in lins for t in (lin.weight, lin.bias)])
