"""DVEmb (data value embedding, Wang et al. 2024) through the ``dattri`` package, on the CPU.

A trajectory-aware peer of forward-only attribution: while the recorded training run is
replayed (same seed, same batches, bit-identical parameters), dattri's
:class:`~dattri.algorithm.dvemb.DVEmbAttributor` caches every step's (projected)
per-example gradients; ``cache()`` then runs its backward recursion
``e_i += η_t/B · (g_{i,t} − M g_{i,t})``, ``M += Σ_i e_i g_{i,t}ᵀ`` — the trajectory response
with the step's Hessian replaced by the gradients' outer products (empirical Fisher),
plain SGD (momentum and weight decay are not in dattri's recursion; ``meta`` says so).

Scores: dattri's ``attribute`` returns ⟨e_i, ∇ℓ(q)⟩; the query's "loss" here is −f(q) for
the chosen measurement f (one loss function serves both: a flag in the data picks the
training cross-entropy or −f), so the score is ≈ ⟨dθ/dw_i, ∇f(q)⟩, the same sign as every
other method of the package (upweighting source j changes f by the score).
"""

from __future__ import annotations

import contextlib
import io

import torch
from torch import Tensor

from ..config import TrainConfig
from ..engine.measures import measure as measure_fn
from ..engine.model import MLP
from ..engine.train import Replay, batch_orders, step_learning_rates
from ..errors import ConfigError
from .base import Attributor


class DVEmb(Attributor):
    """DVEmb via ``dattri`` (projection ``proj_dim``, default 512; None = exact gradients).

    ``train_config`` is the recorded run's (its seed fixes the batches); :meth:`fit` replays
    it on ``X, y`` and checks that the replay ends at ``theta`` (the run's final parameters).
    """

    name = "dvemb"
    measures = ("margin", "loss", "logit", "prob")

    def __init__(
        self,
        mlp: MLP,
        theta: Tensor,
        train_config: TrainConfig,
        proj_dim: int | None = 512,
        proj_seed: int = 0,
        measure="margin",
        target_class=None,
    ):
        super().__init__(mlp, measure, target_class)
        if proj_dim is not None and not (isinstance(proj_dim, int) and proj_dim >= 1):
            raise ConfigError(f"the projection dimension must be a whole number ≥ 1 or None, got {proj_dim!r}.")
        self.theta = theta.detach()
        self.train_config = train_config
        self.proj_dim, self.proj_seed = proj_dim, int(proj_seed)
        self.meta.update(
            proj_dim=proj_dim,
            curvature="empirical Fisher (dattri DVEmb)",
            ignored=[k for k in ("momentum", "weight_decay") if getattr(train_config, k)],
        )

    def _loss(self):
        mlp, measure, target = self.mlp, self.measure, self.target_class

        def loss(params, data):
            x, y, query = data  # one example: [d], [], [] (query: 1 = −f(q), 0 = training loss)
            logits = torch.func.functional_call(self._module, params, (x.unsqueeze(0),))
            yy = y.reshape(1)
            f = measure_fn(logits, yy, measure, target).reshape(())
            ce = torch.nn.functional.cross_entropy(logits, yy)
            return torch.where(query > 0, -f, ce)

        del mlp
        return loss

    def _setup(self, X, y):
        # dattri is a heavy import (and pulls in its own dependencies): only when DVEmb is used
        from dattri.algorithm.dvemb import DVEmbAttributor
        from dattri.task import AttributionTask

        cfg = self.train_config
        dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        Xt, yt = X.to(dtype), y.long()
        orders = batch_orders(Xt.shape[0], cfg)
        lrs = step_learning_rates(cfg, len(orders[0]))
        steps = [idx for b in orders for idx in b]
        replay = Replay(self.mlp, Xt, yt, None, steps, lrs, cfg, "hessian", "mlp")
        theta = self.mlp.init(torch.Generator().manual_seed(cfg.seed), dtype)
        self._module = self.mlp.to_module(theta)
        task = AttributionTask(loss_func=self._loss(), model=self._module, checkpoints=[self._module.state_dict()])
        self._dv = DVEmbAttributor(task=task, proj_dim=self.proj_dim, proj_seed=self.proj_seed)
        velocity = torch.zeros_like(theta) if cfg.momentum else None
        zero = torch.zeros(0)
        steps_per_epoch = len(orders[0])
        for t, idx in enumerate(steps):
            self._load(theta)
            flag = zero.new_zeros(len(idx))
            self._dv.cache_gradients(
                epoch=t // steps_per_epoch,
                batch_data=(Xt[idx], yt[idx], flag),
                indices=idx,
                learning_rate=float(lrs[t]),
            )
            theta, velocity = replay.advance(t, theta, velocity)
        if not torch.equal(theta.to(self.theta.dtype), self.theta):
            raise ConfigError(
                "replaying the run for DVEmb did not reproduce its final parameters; pass the run's own "
                "training data and training options (seed, epochs, batch size, learning rate)."
            )
        self._load(theta)
        with contextlib.redirect_stderr(io.StringIO()):  # dattri's tqdm bars
            self._dv.cache()
        self._dtype = dtype

    def _load(self, theta: Tensor) -> None:
        self._module.load_state_dict(self.mlp.to_module(theta).state_dict())

    def _score(self, X_q, y_q):
        Xq = X_q.to(self._dtype)
        yq = torch.zeros(len(Xq), dtype=torch.long) if y_q is None else y_q
        flag = torch.ones(len(Xq), dtype=self._dtype)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(Xq, yq, flag), batch_size=256)
        with contextlib.redirect_stderr(io.StringIO()):
            scores = self._dv.attribute(loader)  # [n, Q]
        return scores.T.double()

    def state_bytes(self):
        return sum(e.numel() * e.element_size() for e in self._dv.embeddings.values())
