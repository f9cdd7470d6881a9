"""Label noise for the mislabel workflow, on top of the data module's own noise.

Interface: :class:`NoiseSpec` ``(rate, pairs, seed)`` with ``.load(source, **options)``
→ a :class:`~attrcore.data.Dataset` whose ``flipped`` records exactly which training
labels changed; :func:`flip_table` lists them; :func:`parse_noise_pairs` reads
``"7:1,2:5"``.

There is one implementation of the noise, in :func:`attrcore.data.load_dataset`
(``label_noise``, ``noise_pairs``, ``noise_seed``): uniform (``round(rate · n)`` examples
get another class, uniformly) or class-conditional (``rate`` of each source class's
examples get its partner's label). A run records the data spec, so ``run.dataset``
rebuilds the same noisy labels anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.datasets import load_dataset, parse_noise_pairs
from ..errors import ConfigError

__all__ = ["NoiseSpec", "flip_table", "parse_noise_pairs"]


@dataclass(frozen=True)
class NoiseSpec:
    """``rate`` in [0, 1); ``pairs`` ``"7:1,2:5"`` (None = uniform); ``seed`` of the noise
    alone (None = the split seed)."""

    rate: float = 0.1
    pairs: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0 <= self.rate < 1:
            raise ConfigError(
                f"the noise rate must be in [0, 1), got {self.rate!r}: it is the fraction of labels "
                "flipped (of each source class, with pairs), e.g. 0.1."
            )

    def options(self) -> dict:
        """The ``load_dataset`` keyword arguments of this noise."""
        out = {"label_noise": float(self.rate)}
        if self.pairs:
            out["noise_pairs"] = self.pairs
        if self.seed is not None:
            out["noise_seed"] = int(self.seed)
        return out

    def load(self, source, **options):
        return load_dataset(source, **options, **self.options())


def flip_table(dataset):
    """The injected flips: ``index, clean_label, given_label`` (class names)."""
    names = [str(c) for c in dataset.class_names]
    idx = np.asarray(dataset.flipped, dtype=np.int64)
    return pd.DataFrame(
        {
            "index": idx,
            "clean_label": [names[c] for c in dataset.y_train_clean[idx]],
            "given_label": [names[c] for c in dataset.y_train[idx]],
        }
    )
