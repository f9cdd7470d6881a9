"""Where the EK-FAC map loses the exact short horizon (issue #12): one step's injections propagated K
steps by several maps, each compared with the exact per-step Hessian map (median over the batch's
examples of the cosine and relative error; also the cosine to the exact per-step GN map).

    python benchmarks/ekfac_probe.py digits-mlp 16 1,5,12,25 32,128   # task, K, epochs, ranks

Maps: hess / gn (exact per step), gn-block (per-step GN without cross-layer blocks), seg-gn
(the segment's averaged GN, discrete steps), seg-gn-block, seg-gn-block-exp8 (its exponential by
8 sub-steps), ekfac-exp / ekfac-disc (the segment's EK-FAC, continuous / discrete decay),
kfac-exp (K-FAC eigenvalues), k0 (no curvature), lrR-nodecay / lrR-ekfac (the top R
eigen-directions of the segment's whole-network GN exact; the rest undecayed / by EK-FAC).
Training is replayed in float64.
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attrcore.engine import MLP
from attrcore.engine.curvature import MLPCurvature
from attrcore.engine.ekfac import _StepRecord, pseudo_deltas, segment_factors
from attrcore.engine.tangents import Tangents
from attrcore.engine.train import batch_orders, step_learning_rates
from attrcore.evaluation.bench import task_setup

torch.set_num_threads(1)

task = sys.argv[1] if len(sys.argv) > 1 else "digits-mlp"
K = int(sys.argv[2]) if len(sys.argv) > 2 else 16
ds, mcfg, cfg = task_setup(task)
mlp = MLP(mcfg)
dt = torch.float64
X = torch.as_tensor(ds.X_train).to(dt)
y = torch.as_tensor(ds.y_train).long()
theta = mlp.init(torch.Generator().manual_seed(cfg.seed), dt)
orders = batch_orders(X.shape[0], cfg)
spe = len(orders[0])
lrs = step_learning_rates(cfg, spe)
mu = cfg.momentum
thetas, batches = [], []
vel = torch.zeros_like(theta)
for ep in orders:
    for idx in ep:
        c = MLPCurvature(mlp, theta, X[idx], y[idx], weight_decay=cfg.weight_decay)
        thetas.append(theta.clone())
        batches.append(idx)
        vel.mul_(mu).add_(c.grad())
        theta = theta - float(lrs[len(thetas) - 1]) * vel
T = len(thetas)
wd = cfg.weight_decay


def curv(t, kind):
    return MLPCurvature(mlp, thetas[t], X[batches[t]], y[batches[t]], weight_decay=wd, curvature=kind)


L = mlp.n_layers


def layer_only(U, l):
    V = U.clone()
    for k in range(L):
        if k != l:
            V.W[k].zero_()
            V.b[k].zero_()
    return V


def block_hvp(c, U):
    out = Tangents.zeros(mlp, len(U), dt)
    for l in range(L):
        H = c.hvp(layer_only(U, l))
        out.W[l].copy_(H.W[l])
        out.b[l].copy_(H.b[l])
    return out


def to_eig(U, basis):  # [n, o, i+1] eigen coords per layer
    return [basis[l].QG.T @ torch.cat([U.W[l], U.b[l].unsqueeze(2)], 2) @ basis[l].QA for l in range(L)]


def from_eig(C, basis):
    W, b = [], []
    for l in range(L):
        M = basis[l].QG @ C[l] @ basis[l].QA.T
        W.append(M[:, :, :-1].contiguous())
        b.append(M[:, :, -1].contiguous())
    return Tangents(W, b)


def flat(U):
    return U.flat()


res = []
EPOCHS = [int(e) for e in (sys.argv[3].split(",") if len(sys.argv) > 3 else ["1", "5", "12", "25"])]
RANKS = [int(e) for e in (sys.argv[4].split(",") if len(sys.argv) > 4 else [])]


def probe(ep_inj: int) -> None:
    t = ep_inj * spe + 3
    seg = list(range(ep_inj * spe, (ep_inj + 1) * spe))
    c0 = curv(t, "gauss-newton")
    M = torch.eye(len(batches[t]), dtype=dt)
    G0 = c0.source_grads(M)  # per example g_i / B
    G0.mul_(-float(lrs[t]))
    steps = list(range(t + 1, min(T, t + 1 + K)))
    out = {}
    row_extra = {}

    def run(name, fn):
        U = G0.clone()
        for k in steps:
            U = fn(k, U)
        out[name] = flat(U)

    run("hess", lambda k, U: U.add_(curv(k, "hessian").hvp(U), alpha=-float(lrs[k])))
    run("gn", lambda k, U: U.add_(curv(k, "gauss-newton").hvp(U), alpha=-float(lrs[k])))
    run("gn-block", lambda k, U: U.add_(block_hvp(curv(k, "gauss-newton"), U), alpha=-float(lrs[k])))
    segc = [curv(s, "gauss-newton") for s in seg]

    def avg(U, block=False):
        acc = Tangents.zeros(mlp, len(U), dt)
        for c in segc:
            acc.add_(block_hvp(c, U) if block else c.hvp(U), alpha=1.0 / len(segc))
        return acc

    run("seg-gn", lambda k, U: U.add_(avg(U), alpha=-float(lrs[k])))
    run("seg-gn-block", lambda k, U: U.add_(avg(U, True), alpha=-float(lrs[k])))

    def expmap(k, U, block):
        n = 8
        for _ in range(n):
            U = U.add_(avg(U, block), alpha=-float(lrs[k]) / n)
        return U

    run("seg-gn-block-exp8", lambda k, U: expmap(k, U, True))
    # EK-FAC from the segment's factors
    recs = []
    for s in seg:
        c = segc[s - seg[0]]
        ones = [torch.ones(a.shape[0], 1, dtype=dt) for a in c.cache.acts]
        recs.append(
            _StepRecord(
                t=s,
                sources=batches[s],
                deltas=list(c.deltas),
                acts=[torch.cat([a, o], 1) for a, o in zip(c.cache.acts, ones)],
                pseudo=pseudo_deltas(c),
            )
        )
    basis = segment_factors(recs, wd)
    span = float(lrs[steps].sum())
    C0 = to_eig(G0, basis)
    lam = [b.lam for b in basis]
    out["ekfac-exp"] = flat(from_eig([C * torch.exp(-span * la) for C, la in zip(C0, lam)], basis))
    disc = [torch.ones_like(la) for la in lam]
    for k in steps:
        disc = [d * (1 - float(lrs[k]) * la) for d, la in zip(disc, lam)]
    out["ekfac-disc"] = flat(from_eig([C * d for C, d in zip(C0, disc)], basis))
    # K-FAC eigenvalues (no correction): λ = eig(G) ⊗ eig(A)
    kf = []
    for l in range(L):
        n = sum(len(r.sources) for r in recs)
        A = sum(r.acts[l].T @ r.acts[l] for r in recs) / n
        Gm = sum(r.pseudo[l].T @ r.pseudo[l] for r in recs) / n
        ea = torch.diagonal(basis[l].QA.T @ A @ basis[l].QA)
        eg = torch.diagonal(basis[l].QG.T @ Gm @ basis[l].QG)
        kf.append(eg[:, None] * ea[None, :] + wd)
    out["kfac-exp"] = flat(from_eig([C * torch.exp(-span * la) for C, la in zip(C0, kf)], basis))
    out["k0"] = flat(G0)
    # top-r eigenpairs of the segment's full GN by subspace iteration + Rayleigh-Ritz
    g0f = flat(G0)
    for r in RANKS:
        gen = torch.Generator().manual_seed(0)
        Vf = torch.linalg.qr(torch.randn(mlp.n_params, r, generator=gen, dtype=dt))[0].T
        for _ in range(25):
            Wf = flat(avg(Tangents.from_flat(mlp, Vf.contiguous())))
            Vf = torch.linalg.qr(Wf.T)[0].T
        Wf = flat(avg(Tangents.from_flat(mlp, Vf.contiguous())))
        S, E = torch.linalg.eigh(Vf @ Wf.T)
        Vr = E.T @ Vf  # [r, p]
        c = g0f @ Vr.T  # [B, r]
        top = (c * torch.exp(-span * S)) @ Vr
        out[f"lr{r}-nodecay"] = top + (g0f - c @ Vr)
        # EK-FAC on the complement
        comp = g0f - c @ Vr
        ce = flat(
            from_eig(
                [
                    C * torch.exp(-span * la)
                    for C, la in zip(to_eig(Tangents.from_flat(mlp, comp.contiguous()), basis), lam)
                ],
                basis,
            )
        )
        out[f"lr{r}-ekfac"] = top + (ce - (ce @ Vr.T) @ Vr)
        row_extra[f"S{r}"] = [round(float(S[-1]), 3), round(float(S[0]), 4)]
    ref = out["hess"]
    row = {"t": t, "epoch": ep_inj, **row_extra}
    lmax = [float(la.max()) for la in lam]
    row["ekfac_lam_max"] = lmax
    for name, v in out.items():
        cos = torch.nn.functional.cosine_similarity(v, ref, dim=1)
        rel = (v - ref).norm(dim=1) / ref.norm(dim=1)
        cos_gn = torch.nn.functional.cosine_similarity(v, out["gn"], dim=1)
        row[name] = {
            "cos_hess": round(float(cos.median()), 4),
            "rel_hess": round(float(rel.median()), 4),
            "cos_gn": round(float(cos_gn.median()), 4),
        }
    print(json.dumps(row), flush=True)


for ep_inj in EPOCHS:
    probe(ep_inj)
