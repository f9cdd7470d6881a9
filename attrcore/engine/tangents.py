"""A stack of T parameter-shaped vectors (tangents, responses) stored layer by layer.

``Tangents`` keeps, per layer, ``W [T, d_out, d_in]`` and ``b [T, d_out]`` as separate
contiguous blocks. That is the layout the per-layer products want: the T weight blocks of
a layer form one ``[T·d_out, d_in]`` matrix, so a product with a batch of activations is
a single large GEMM instead of T small ones. ``flat()`` converts to the row layout
``[T, p]`` of :class:`attrcore.engine.model.MLP` (used for storage and by ``torch.func`` code).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .model import MLP


class Tangents:
    def __init__(self, W: list[Tensor], b: list[Tensor]):
        self.W, self.b = W, b

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def zeros(cls, mlp: MLP, T: int, dtype: torch.dtype) -> Tangents:
        return cls(
            [torch.zeros(T, o, i, dtype=dtype) for *_, o, i in mlp.layout],
            [torch.zeros(T, o, dtype=dtype) for *_, o, _i in mlp.layout],
        )

    @classmethod
    def empty(cls, mlp: MLP, T: int, dtype: torch.dtype) -> Tangents:
        return cls(
            [torch.empty(T, o, i, dtype=dtype) for *_, o, i in mlp.layout],
            [torch.empty(T, o, dtype=dtype) for *_, o, _i in mlp.layout],
        )

    @classmethod
    def from_flat(cls, mlp: MLP, flat: Tensor) -> Tangents:
        """From the row layout ``[T, p]`` (copies into contiguous per-layer blocks)."""
        W, b = [], []
        for Wl, bl in mlp.unflatten(flat):
            W.append(Wl.contiguous())
            b.append(bl.contiguous())
        return cls(W, b)

    def flat(self) -> Tensor:
        """The row layout ``[T, p]``."""
        T = len(self)
        parts = []
        for Wl, bl in zip(self.W, self.b):
            parts += [Wl.reshape(T, -1), bl]
        return torch.cat(parts, dim=1)

    # ---- shape --------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.W[0].shape[0]

    @property
    def n_params(self) -> int:
        return sum(w[0].numel() + b[0].numel() for w, b in zip(self.W, self.b))

    @property
    def dtype(self) -> torch.dtype:
        return self.W[0].dtype

    def blocks(self) -> list[Tensor]:
        return [t for pair in zip(self.W, self.b) for t in pair]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.blocks())

    # ---- views and copies ---------------------------------------------------------------
    def rows(self, sl: slice) -> Tangents:
        """A view of rows ``sl`` (each block stays contiguous)."""
        return Tangents([w[sl] for w in self.W], [b[sl] for b in self.b])

    def select(self, idx: Tensor) -> Tangents:
        return Tangents([w[idx] for w in self.W], [b[idx] for b in self.b])

    def clone(self) -> Tangents:
        return Tangents([w.clone() for w in self.W], [b.clone() for b in self.b])

    def to(self, dtype: torch.dtype) -> Tangents:
        return Tangents([w.to(dtype) for w in self.W], [b.to(dtype) for b in self.b])

    # ---- in-place arithmetic ------------------------------------------------------------
    def add_(self, other: Tangents, alpha: float = 1.0) -> Tangents:
        for a, o in zip(self.blocks(), other.blocks()):
            a.add_(o, alpha=alpha)
        return self

    def mul_(self, s: float) -> Tangents:
        for a in self.blocks():
            a.mul_(s)
        return self

    def zero_(self) -> Tangents:
        for a in self.blocks():
            a.zero_()
        return self

    def copy_(self, other: Tangents, alpha: float = 1.0) -> Tangents:
        for a, o in zip(self.blocks(), other.blocks()):
            torch.mul(o, alpha, out=a) if alpha != 1.0 else a.copy_(o)
        return self

    def index_add_(self, idx: Tensor, other: Tangents, alpha: float = 1.0) -> Tangents:
        """``self[idx[k]] += alpha * other[k]`` (repeated indices accumulate)."""
        for a, o in zip(self.blocks(), other.blocks()):
            a.index_add_(0, idx, o, alpha=alpha)
        return self

    def index_copy_(self, idx: Tensor, other: Tangents) -> Tangents:
        for a, o in zip(self.blocks(), other.blocks()):
            a.index_copy_(0, idx, o)
        return self

    def isfinite(self) -> bool:
        return all(bool(torch.isfinite(a).all()) for a in self.blocks())
