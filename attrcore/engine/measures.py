"""Query measurements f(z_q; θ) computed from logits, and their derivative in the logits.

- ``margin`` (default): logit of the true class minus logsumexp of the other logits (TRAK's).
- ``loss``: cross-entropy of the true class.
- ``logit`` / ``prob``: logit or softmax probability of ``target_class`` (default: true class).

``measure_dlogits`` returns ∂f/∂logits in closed form. The forward-mode readout contracts
it with the logits' tangent, which is exactly the last step of a JVP through f; it is a
forward quantity (no backward pass through the network).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError

MEASURES = ("margin", "loss", "logit", "prob")


def _check(kind: str) -> None:
    if kind not in MEASURES:
        raise ConfigError(f"unknown measurement {kind!r}; choose one of {', '.join(MEASURES)}.")


def needs_labels(measure: str, target_class: int | None = None) -> bool:
    """Whether measurement ``measure`` needs the queries' labels (margin and loss always;
    logit and prob unless a target class is given)."""
    return measure in ("margin", "loss") or target_class is None


def check_labels(measure: str, has_labels: bool, target_class: int | None = None) -> None:
    """The one check that the queries carry the labels ``measure`` needs."""
    if not has_labels and needs_labels(measure, target_class):
        raise ConfigError(
            f"the {measure!r} measurement needs query labels; pass queries with labels (a label column / "
            "array), or use `measure` logit or prob with a `target_class`."
        )


def _target(logits: Tensor, y: Tensor | None, target_class: int | None) -> Tensor:
    if target_class is not None:
        if not 0 <= target_class < logits.shape[-1]:
            raise ConfigError(
                f"target class {target_class} is out of range; the model has classes 0..{logits.shape[-1] - 1}."
            )
        return torch.full(logits.shape[:-1], target_class, dtype=torch.long, device=logits.device)
    check_labels("logit", y is not None, target_class)
    return y.long().expand(logits.shape[:-1])


def measure(logits: Tensor, y: Tensor | None, kind: str = "margin", target_class: int | None = None) -> Tensor:
    """f per query: ``logits [..., C]``, ``y [...]`` → ``[...]``."""
    _check(kind)
    t = _target(logits, y, target_class if kind in ("logit", "prob") else None)
    # a comparison, not one_hot: also works under torch.func.vmap (DVEmb's per-example gradients)
    onehot = t.unsqueeze(-1) == torch.arange(logits.shape[-1], device=logits.device)
    zt = logits.gather(-1, t.unsqueeze(-1)).squeeze(-1)
    if kind == "margin":
        return zt - torch.logsumexp(logits.masked_fill(onehot, float("-inf")), dim=-1)
    if kind == "loss":
        return torch.logsumexp(logits, dim=-1) - zt
    if kind == "logit":
        return zt
    return torch.softmax(logits, dim=-1).gather(-1, t.unsqueeze(-1)).squeeze(-1)


def measure_dlogits(logits: Tensor, y: Tensor | None, kind: str = "margin", target_class: int | None = None) -> Tensor:
    """∂f/∂logits ``[Q, C]`` in closed form."""
    _check(kind)
    t = _target(logits, y, target_class if kind in ("logit", "prob") else None)
    onehot = torch.nn.functional.one_hot(t, logits.shape[-1]).to(logits.dtype)
    if kind == "margin":
        others = torch.softmax(logits.masked_fill(onehot.bool(), float("-inf")), dim=-1)
        return onehot - others
    if kind == "loss":
        return torch.softmax(logits, dim=-1) - onehot
    if kind == "logit":
        return onehot
    p = torch.softmax(logits, dim=-1)
    pt = (p * onehot).sum(-1, keepdim=True)
    return pt * (onehot - p)
