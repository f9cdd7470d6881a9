"""Forward-only readout: attribution scores τ(q, j) from simulated responses Δ_j.

Interface: :func:`score` ``(mlp, theta, responses, X_q, y_q) -> [Q, m]``. Implementations
(``readout=``):

- ``"jvp"`` (default): τ(q, j) = ⟨∇_θ f(z_q; θ̂), Δ_j⟩ evaluated in *forward mode*: each
  Δ_j is pushed forward through the network as a tangent of the activations, layer by
  layer, and contracted with ∂f/∂logits at the end. Batched over sources and queries:
  the first layer's tangents for all sources and queries are one GEMM
  ``[m·d_1, d_0] @ [d_0, Q]``. Every layer's tangent is carried forward to the logits;
  nothing is propagated backward from the measurement (not even through the last layer).
- ``"cd"``: central difference [f(θ̂ + εΔ_j) − f(θ̂ − εΔ_j)] / 2ε with two perturbed
  forward passes per source, batched the same way; ε is scaled per source to
  ``eps · ‖θ̂‖ / ‖Δ_j‖``.

``backend="func"`` computes the same with ``torch.func.jvp`` under ``vmap`` (the slow
reference the tests hold the fast path to). No path runs reverse-mode autograd.

:func:`self_scores` ``(mlp, theta, responses, X, y) -> [n]`` is the *diagonal*: every
training point read out against its own source only, τ(i, s_i) = ⟨∇f(z_i; θ̂), Δ_{s_i}⟩,
one forward-mode JVP per point with its own tangent (O(n·p), never the n × m matrix);
the self-influence that ranks suspicious labels (:mod:`attrcore.mislabel`).

Any number of queries and sources: queries are processed in chunks whose working memory
stays under ``memory_budget_mb`` (and sources in cache-sized chunks inside each), so only
the result has to fit. Three ways to receive it:

- :func:`score` — the whole ``[Q, m]`` matrix in memory; refused up front (with what to do
  instead) when it would not fit (``max_result_mb``, default half the available memory);
- :func:`top_k` — per query the k largest and k smallest scores with their source ids
  (``[Q, k]`` each), never holding more than one query chunk's ``[q, m]`` block;
- :func:`score_to_npy` — the matrix written chunk by chunk into a memory-mapped ``.npy``
  file (refused up front when the disk cannot hold it).

:func:`iter_scores` is the generator all three consume.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import CancelledError, ConfigError, ShapeError
from .compress import CompressedResponses
from .measures import measure as measure_fn
from .measures import measure_dlogits
from .model import MLP, act
from .tangents import Tangents
from .train import Progress

READOUTS = ("jvp", "cd")
# Sources per chunk are capped so that a chunk's [S, d, Q] tangents stay in cache.
CACHE_BYTES = 4 * 2**20
RESULT_DTYPE = torch.float32  # scores are always returned (and written) in float32
_RESULT_ITEMSIZE = 4
# Queries per chunk: at least this many when the budget allows (the per-layer GEMMs want a
# wide right-hand side), at most what keeps ≥ ~8 sources per cache-sized source chunk.
_MIN_QUERY_CHUNK = 256


def _sources_per_chunk(mlp: MLP, Q: int, itemsize: int, budget_bytes: float, factor: int) -> int:
    per_source = factor * sum(mlp.config.sizes[1:]) * Q * itemsize
    return max(1, int(min(budget_bytes, CACHE_BYTES) // max(1, per_source)))


def _validate(mlp: MLP, theta: Tensor, responses, X: Tensor, readout: str) -> None:
    if readout not in READOUTS:
        raise ConfigError(f"unknown readout {readout!r}; choose {' or '.join(READOUTS)}.")
    mlp.check_input(X)
    p = responses.shape[1] if isinstance(responses, Tensor) else responses.n_params
    if theta.shape != (mlp.n_params,) or p != mlp.n_params:
        raise ShapeError(
            f"responses have {p} parameters per source but the model has {mlp.n_params}; "
            "score with the run the responses were simulated for."
        )


def score(
    mlp: MLP,
    theta: Tensor,
    responses,
    X: Tensor,
    y: Tensor | None = None,
    measure: str = "margin",
    readout: str = "jvp",
    target_class: int | None = None,
    eps: float | None = None,
    backend: str = "mlp",
    memory_budget_mb: float = 1024.0,
    out_dtype: torch.dtype = torch.float32,
    max_result_mb: float | None = None,
    progress: Callable | None = None,
) -> Tensor:
    """Scores ``[Q, m]`` (``out_dtype``, float32 by default) for queries ``X [Q, d]`` (labels ``y [Q]``).

    ``responses`` is ``[m, p]`` in the model's row layout, a :class:`Tangents` stack
    (pass the stack when scoring repeatedly: it saves a copy per call), or
    :class:`~attrcore.compress.CompressedResponses` ``Δ ≈ C Qᵀ``: then the r directional
    derivatives ⟨∇f(z_q), Q_k⟩ are read out (r JVPs per query) and multiplied by ``Cᵀ``.
    The working memory stays under ``memory_budget_mb`` (queries in chunks); a result
    larger than ``max_result_mb`` (default: half the memory available now) is refused
    before any work with a :class:`ConfigError` that offers :func:`top_k`,
    :func:`score_to_npy` or fewer queries.
    """

    X, y, stack = _prepare(mlp, theta, responses, X, y, readout, backend)
    check_result_fits(X.shape[0], len(stack), max_result_mb)
    if backend == "func":
        if isinstance(stack, CompressedResponses):
            work = torch.float64 if theta.dtype == torch.float64 else torch.float32
            flat = stack.Q.flat().to(theta.dtype)
            J = _score_func(mlp, theta, flat, X, y, measure, readout, target_class, eps).to(work)
            return (J @ stack.C.to(work).T).to(out_dtype)
        return _score_func(mlp, theta, stack.to(theta.dtype), X, y, measure, readout, target_class, eps).to(out_dtype)
    out = torch.empty(X.shape[0], len(stack), dtype=out_dtype)
    for start, stop, chunk in _chunks(
        mlp, theta, stack, X, y, measure, readout, target_class, eps, memory_budget_mb, progress, out_dtype
    ):
        out[start:stop] = chunk
    return out


def iter_scores(
    mlp: MLP,
    theta: Tensor,
    responses: Tensor | Tangents,
    X: Tensor,
    y: Tensor | None = None,
    measure: str = "margin",
    readout: str = "jvp",
    target_class: int | None = None,
    eps: float | None = None,
    memory_budget_mb: float = 1024.0,
    progress: Callable | None = None,
) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(start, stop, scores [stop − start, m])`` for consecutive query chunks.

    Each chunk's working memory (activations, its block of scores, the source chunks'
    tangents) stays under ``memory_budget_mb``; nothing of earlier chunks is kept.
    ``progress`` gets a :class:`~attrcore.engine.train.Progress` ("score", queries done,
    queries) per chunk; returning ``False`` stops with :class:`CancelledError`.
    """
    X, y, stack = _prepare(mlp, theta, responses, X, y, readout, "mlp")
    for start, stop, chunk in _chunks(
        mlp, theta, stack, X, y, measure, readout, target_class, eps, memory_budget_mb, progress
    ):
        yield start, stop, chunk.contiguous()


@dataclass(frozen=True)
class TopK:
    """Per query, the ``k`` largest scores (proponents, decreasing) and the ``k`` smallest
    (opponents, increasing) with their source ids. Every array is ``[Q, k]``."""

    top_indices: Tensor  # int64
    top_scores: Tensor  # float32
    bottom_indices: Tensor
    bottom_scores: Tensor

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "top_indices": self.top_indices.numpy(),
            "top_scores": self.top_scores.numpy(),
            "bottom_indices": self.bottom_indices.numpy(),
            "bottom_scores": self.bottom_scores.numpy(),
        }


def top_k(
    mlp: MLP,
    theta: Tensor,
    responses: Tensor | Tangents,
    X: Tensor,
    y: Tensor | None = None,
    k: int = 10,
    measure: str = "margin",
    readout: str = "jvp",
    target_class: int | None = None,
    eps: float | None = None,
    memory_budget_mb: float = 1024.0,
    progress: Callable | None = None,
) -> TopK:
    """The ``k`` most positive and most negative sources of every query, streamed: at
    most one query chunk's ``[q, m]`` block exists at a time (see :func:`iter_scores`)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"top_k must be a whole number ≥ 1, got {k!r}.")
    X, y, stack = _prepare(mlp, theta, responses, X, y, readout, "mlp")
    Q, m = X.shape[0], len(stack)
    k = int(min(k, m))
    check_result_fits(Q, 2 * k, None, what=f"the top-{k} lists", hint=False)
    out = [
        torch.empty(Q, k, dtype=torch.long),
        torch.empty(Q, k, dtype=RESULT_DTYPE),
        torch.empty(Q, k, dtype=torch.long),
        torch.empty(Q, k, dtype=RESULT_DTYPE),
    ]
    for start, stop, chunk in _chunks(
        mlp, theta, stack, X, y, measure, readout, target_class, eps, memory_budget_mb, progress
    ):
        hi = torch.topk(chunk, k, dim=1, largest=True, sorted=True)
        lo = torch.topk(chunk, k, dim=1, largest=False, sorted=True)
        out[0][start:stop], out[1][start:stop] = hi.indices, hi.values
        out[2][start:stop], out[3][start:stop] = lo.indices, lo.values
    return TopK(*out)


def score_to_npy(
    path: str | os.PathLike,
    mlp: MLP,
    theta: Tensor,
    responses: Tensor | Tangents,
    X: Tensor,
    y: Tensor | None = None,
    measure: str = "margin",
    readout: str = "jvp",
    target_class: int | None = None,
    eps: float | None = None,
    memory_budget_mb: float = 1024.0,
    progress: Callable | None = None,
) -> Path:
    """Write the ``[Q, m]`` float32 scores into a ``.npy`` file chunk by chunk, through a
    memory map, so the matrix never has to fit in memory. The file appears atomically
    (written as ``<name>.part``, then renamed); refused up front when the disk cannot
    hold it. Read it back lazily with ``np.load(path, mmap_mode="r")``."""
    path = Path(path)
    if path.suffix != ".npy":
        raise ConfigError(f"the scores file must end in .npy, got {path.name!r}.")
    X, y, stack = _prepare(mlp, theta, responses, X, y, readout, "mlp")
    Q, m = X.shape[0], len(stack)
    need = Q * m * _RESULT_ITEMSIZE + 4096
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if need > free:
        raise ConfigError(
            f"the {Q} × {m} score matrix needs {_fmt_bytes(need)} on disk but {path.parent} has "
            f"{_fmt_bytes(free)} free; keep only the top-k sources per query (`top_k`), score "
            "a subset of the queries, or write to a disk with more room."
        )
    tmp = path.with_name(path.name + ".part")
    try:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(Q, m))
        for start, stop, chunk in _chunks(
            mlp, theta, stack, X, y, measure, readout, target_class, eps, memory_budget_mb, progress
        ):
            mm[start:stop] = chunk.numpy()
        mm.flush()
        del mm
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ----------------------------------------------------------------------------- sizing


def result_bytes(n_queries: int, n_sources: int) -> int:
    """Bytes of a float32 ``[n_queries, n_sources]`` score matrix."""
    return int(n_queries) * int(n_sources) * _RESULT_ITEMSIZE


def available_memory_bytes() -> int:
    """Memory the system can give this process now (``MemAvailable``), best effort."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def check_result_fits(
    n_queries: int, n_sources: int, max_result_mb: float | None, what: str = "the score matrix", hint: bool = True
) -> None:
    """Refuse (ConfigError, before any work) a result that cannot be held in memory.

    The limit is ``max_result_mb``, or half the memory available now.
    """
    need = result_bytes(n_queries, n_sources)
    limit = available_memory_bytes() / 2 if max_result_mb is None else max_result_mb * 2**20
    if need <= limit:
        return
    where = "half the memory available now" if max_result_mb is None else f"`max_result_mb` = {max_result_mb:g}"
    fix = (
        "keep only the top-k sources of each query (`top_k`), write the matrix chunk by chunk to a "
        "memory-mapped .npy file (score_to_npy, `out`), or score a subset of the queries"
        if hint
        else "score a subset of the queries or ask for a smaller k"
    )
    raise ConfigError(
        f"{what} for {n_queries} queries × {n_sources} sources would take {_fmt_bytes(need)}, "
        f"more than {where} ({_fmt_bytes(limit)}); {fix}."
    )


def queries_per_chunk(mlp: MLP, n_sources: int, itemsize: int, budget_bytes: float) -> int:
    """How many queries one chunk may hold so that its working memory fits the budget.

    Per query: its block of scores twice (``[m, q]`` and the transposed ``[q, m]``) and the
    forward activations with their transposes; the source chunks inside are cache-sized.
    """
    width = sum(mlp.config.sizes)
    per_query = 2 * _RESULT_ITEMSIZE * n_sources + 6 * width * itemsize
    by_budget = int(budget_bytes // per_query)
    by_cache = int(CACHE_BYTES // (16 * width * itemsize))
    return max(1, min(by_budget, max(_MIN_QUERY_CHUNK, by_cache)))


def _fmt_bytes(n: float) -> str:
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _prepare(mlp, theta, responses, X, y, readout, backend):
    """Checked query tensors and the responses in the form the kernels read: a
    :class:`Tangents` stack, flat ``[m, p]`` rows (``backend="func"``), or compressed."""

    X = torch.as_tensor(X).to(theta.dtype)
    y = None if y is None else torch.as_tensor(y).long()
    compressed = isinstance(responses, CompressedResponses)
    _validate(mlp, theta, responses.Q if compressed else responses, X, readout)
    if y is not None and y.shape != (X.shape[0],):
        raise ShapeError(f"{X.shape[0]} queries but {y.shape[0]} labels; pass one label per query.")
    if compressed:
        return X, y, responses
    if backend == "func":
        return X, y, responses.flat() if isinstance(responses, Tangents) else responses
    return X, y, responses if isinstance(responses, Tangents) else Tangents.from_flat(mlp, responses)


def _chunks(
    mlp, theta, stack, X, y, measure, readout, target_class, eps, memory_budget_mb, progress, out_dtype=RESULT_DTYPE
):
    """``(start, stop, scores [q, m])`` per query chunk (a transposed view: consumers copy it
    once); compressed responses are read out as r directions per query and expanded by
    ``C`` chunk by chunk."""

    if not memory_budget_mb > 0:
        raise ConfigError(f"memory budget must be > 0 MB, got {memory_budget_mb}.")
    budget = memory_budget_mb * 2**20
    compressed = isinstance(stack, CompressedResponses)
    kernel_stack = stack.Q if compressed else stack
    work = (torch.float64 if theta.dtype == torch.float64 else torch.float32) if compressed else out_dtype
    Q, m = X.shape[0], len(stack)
    width = m + (len(kernel_stack) if compressed else 0)
    step = queries_per_chunk(mlp, width, theta.element_size(), budget)
    # C's product comes out as [m, q]: C @ Jᵀ with the kernel's [r, q] is a plain GEMM (about
    # twice as fast here as Jᵀ's transpose times Cᵀ); callers copy the transposed view once.
    C = stack.C.to(work) if compressed else None
    kernel = _score_jvp if readout == "jvp" else _score_cd
    for start in range(0, Q, step):
        stop = min(Q, start + step)
        Xc, yc = X[start:stop], None if y is None else y[start:stop]
        if readout == "jvp":
            block = kernel(mlp, theta, kernel_stack, Xc, yc, measure, target_class, budget, work)
        else:
            block = kernel(mlp, theta, kernel_stack, Xc, yc, measure, target_class, eps, budget, work)
        chunk = (C @ block).to(out_dtype).T if compressed else block.T  # [q, m], a transposed view
        yield start, stop, chunk
        if progress is not None and progress(Progress("score", stop, Q)) is False:
            raise CancelledError("scoring was cancelled; nothing was written.")


def self_scores(
    mlp: MLP,
    theta: Tensor,
    responses: Tensor | Tangents,
    X: Tensor,
    y: Tensor | None = None,
    measure: str = "loss",
    target_class: int | None = None,
    source_index=None,
    memory_budget_mb: float = 1024.0,
) -> Tensor:
    """Self-influence ``[n]`` (float32): τ(i, s_i) = ⟨∇_θ f(z_i; θ̂), Δ_{s_i}⟩ for every
    training point ``X [n, d]`` (labels ``y [n]``) read out against its *own* source.

    A diagonal, never the ``[n, m]`` matrix: each point is pushed forward with its own
    tangent Δ_{s_i} (one JVP per point, batched over points), O(n·p) work in all.
    ``source_index [n]`` maps point i to its source s_i; by default point i is source i
    (per-example sources, m = n), and the result is the diagonal of :func:`score`. With
    grouped sources τ(i, g_i) is the first-order effect of up-weighting i's whole group on
    i's own measurement (the ``[n, m]`` scores gathered at each point's group).

    ``responses`` is ``[m, p]``, a :class:`Tangents` stack, or
    :class:`~attrcore.compress.CompressedResponses` ``Δ ≈ C Qᵀ``: then τ(i, s_i) =
    Σ_k C[s_i, k] ⟨∇f(z_i), Q_k⟩ (r JVPs per point). Sign: with ``measure="loss"``
    up-weighting a point lowers its own loss, so τ < 0 and −τ is the usual self-influence.
    """

    if isinstance(responses, CompressedResponses):
        J = score(
            mlp,
            theta,
            responses.Q,
            X,
            y,
            measure,
            "jvp",
            target_class,
            memory_budget_mb=memory_budget_mb,
            out_dtype=torch.float64 if theta.dtype == torch.float64 else torch.float32,
        )  # [n, r]
        m = responses.C.shape[0]
        rows = _self_rows(source_index, J.shape[0], m)
        C = responses.C.to(J.dtype)
        return (J * (C if rows is None else C[rows])).sum(1).float()
    X = torch.as_tensor(X).to(theta.dtype)
    y = None if y is None else torch.as_tensor(y).long()
    _validate(mlp, theta, responses, X, "jvp")
    n = X.shape[0]
    if y is not None and y.shape != (n,):
        raise ShapeError(f"{n} points but {y.shape[0]} labels; pass one label per point.")
    stack = responses if isinstance(responses, Tangents) else Tangents.from_flat(mlp, responses)
    m = len(stack)
    rows = _self_rows(source_index, n, m)
    dtype = theta.dtype
    cache = mlp.forward_cache(theta, X)
    g = measure_dlogits(cache.logits, y, measure, target_class)  # ∂f_i/∂logits_i, [n, C]
    layers = mlp.unflatten(theta)
    L = mlp.n_layers
    # a chunk of points holds its own tangents, [S, p]: size it by the memory budget
    per_point = 2 * mlp.n_params * theta.element_size()
    step = max(1, min(n, int(memory_budget_mb * 2**20 // per_point)))
    out = torch.empty(n, dtype=torch.float32)
    for s in range(0, n, step):
        sl = slice(s, min(n, s + step))
        own = sl if rows is None else rows[sl]
        ra = None  # tangent of the current layer's input, [S, d_in]
        for layer, (W, _b) in enumerate(layers):
            dW = stack.W[layer][own].to(dtype)  # [S, d_out, d_in], point i's own Δ
            rz = torch.bmm(dW, cache.acts[layer][sl].unsqueeze(2)).squeeze(2)
            rz += stack.b[layer][own].to(dtype)
            if ra is not None:
                rz += ra @ W.T
            ra = cache.d1[layer][sl] * rz if layer < L - 1 else rz
        out[sl] = (ra * g[sl]).sum(1)
    return out


def _self_rows(source_index, n: int, m: int) -> Tensor | None:
    """Each point's source id ``[n]`` (None: point i is source i)."""
    if source_index is None:
        if m != n:
            raise ShapeError(
                f"the responses hold {m} sources but there are {n} points; pass source_index "
                "(each point's source) to read each point against its own source."
            )
        return None
    idx = torch.as_tensor(np.asarray(source_index)).long()
    if idx.shape != (n,):
        raise ShapeError(f"source_index has shape {tuple(idx.shape)}; it needs one source id per point ({n}).")
    if n and (int(idx.min()) < 0 or int(idx.max()) >= m):
        raise ShapeError(f"source_index refers to sources outside 0..{m - 1}; use the run's own source index.")
    return idx


def _score_jvp(mlp, theta, stack: Tangents, X, y, measure, target_class, budget, out_dtype=torch.float32) -> Tensor:
    """Scores ``[m, Q]`` (sources × queries): every row of ``stack`` pushed forward as a
    tangent through the network, batched over sources and queries, and read by ∂f/∂logits.

    Every layer's tangent is carried forward, the last one's (the logits' tangent) is read by
    g = ∂f/∂logits: ⟨g, dW_L a + db_L + W_L u⟩, its bias part by a small GEMM ``[S, C] @ [C, Q]``
    instead of being broadcast into the tangents. Nothing is propagated backward from the
    measurement: reading the penultimate tangent by σ'(z) ⊙ W_Lᵀ g would save ~8 % of the
    time, but it is a one-layer backward step, and the readout is forward evaluations only.
    """
    dtype = theta.dtype
    cache = mlp.forward_cache(theta, X)
    g_T = measure_dlogits(cache.logits, y, measure, target_class).T.contiguous()  # [C, Q]
    acts_T = [a.T.contiguous() for a in cache.acts]  # [d, Q]
    d1_T = [d.T.contiguous() for d in cache.d1]
    layers = mlp.unflatten(theta)
    m, Q, L = len(stack), X.shape[0], mlp.n_layers
    # what reads each layer's output tangent [o, Q]: g for the logits, nothing for the others
    reads: list[Tensor | None] = [None] * L
    reads[-1] = g_T
    out = torch.empty(m, Q, dtype=out_dtype)
    step = _sources_per_chunk(mlp, Q, theta.element_size(), budget, 2)
    # Two workspaces for a chunk's tangents (the carried one and the next), reused chunk after
    # chunk: a fresh multi-MB block per layer and chunk is a fresh mapping whose pages fault in.
    width = max(mlp.config.sizes[1:])
    work = [torch.empty(min(step, m) * width * Q, dtype=dtype) for _ in range(2)]
    acc = torch.empty(min(step, m), Q, dtype=dtype)  # the scores of a chunk so far
    for s in range(0, m, step):
        sl = slice(s, min(m, s + step))
        S = sl.stop - sl.start
        ra = None  # tangent of the current layer's input, [S, d_in, Q]
        acc_c = acc[:S].zero_()
        for layer, (W, _b) in enumerate(layers):
            o, i = W.shape
            dW = stack.W[layer][sl].to(dtype).reshape(S * o, i)
            db = stack.b[layer][sl].to(dtype)
            buf = work[layer % 2][: S * o * Q].view(S * o, Q)
            read = reads[layer]
            if read is None:  # a hidden layer: carry its tangent forward
                rz = torch.addmm(db.reshape(S * o, 1), dW, acts_T[layer], out=buf).view(S, o, Q)
                if ra is not None:
                    rz.baddbmm_(W.expand(S, o, i), ra)
                ra = rz.mul_(d1_T[layer])  # in place: one memory pass fewer
                continue
            rz = torch.mm(dW, acts_T[layer], out=buf).view(S, o, Q)
            if ra is not None:
                rz.baddbmm_(W.expand(S, o, i), ra)
            acc_c += rz.mul_(read).sum(1)  # Σ_o read_o · (dW a + W u)_o
            acc_c.addmm_(db, read)  # + Σ_o read_o · db_o
            ra = None  # read here: the last layer's input tangent is not formed
        out[sl] = acc_c
    return out


def _score_cd(mlp, theta, stack: Tangents, X, y, measure, target_class, eps, budget, out_dtype=torch.float32) -> Tensor:
    dtype = theta.dtype
    if eps is None:
        eps = 1e-3 if dtype == torch.float32 else 1e-6
    layers = mlp.unflatten(theta)
    acts0_T = X.T.contiguous()
    z1 = torch.addmm(layers[0][1], X, layers[0][0].T).T.contiguous()  # [d_1, Q]
    m, Q, L = len(stack), X.shape[0], mlp.n_layers
    theta_norm = float(theta.norm())
    out = torch.empty(m, Q, dtype=out_dtype)
    step = _sources_per_chunk(mlp, Q, theta.element_size(), budget, 4)
    for s in range(0, m, step):
        sl = slice(s, min(m, s + step))
        S = sl.stop - sl.start
        chunk = Tangents([w[sl].to(dtype) for w in stack.W], [b[sl].to(dtype) for b in stack.b])
        norms = chunk.flat().norm(dim=1).clamp_min(1e-30)
        e = (eps * theta_norm / norms).view(S, 1, 1)  # per-source ε
        o, i = layers[0][0].shape
        dz = torch.mm(chunk.W[0].reshape(S * o, i), acts0_T).view(S, o, Q) + chunk.b[0].unsqueeze(2)
        zs = [z1 + e * dz, z1 - e * dz]  # first layer is linear in θ: exact
        for sign_idx in range(2):
            sgn = 1.0 if sign_idx == 0 else -1.0
            z = zs[sign_idx]
            for layer in range(1, L):
                a = act(mlp.activation, z)
                W, b = layers[layer]
                z = torch.matmul(W, a) + b.view(1, -1, 1)
                z = z + sgn * e * (torch.bmm(chunk.W[layer], a) + chunk.b[layer].unsqueeze(2))
            zs[sign_idx] = z
        # zs: logits [S, C, Q] at θ ± εΔ
        f = [measure_fn(z.transpose(1, 2), y, measure, target_class) for z in zs]
        out[sl] = ((f[0] - f[1]) / (2 * e.view(S, 1))).to(out_dtype)
    return out  # [m, Q]


def _score_func(mlp, theta, flat: Tensor, X, y, measure, readout, target_class, eps) -> Tensor:
    """Reference: ``torch.func.jvp`` (or two perturbed forwards) under ``vmap``."""

    def f(th: Tensor) -> Tensor:
        return measure_fn(mlp.forward(th, X), y, measure, target_class)

    if readout == "jvp":
        scores = torch.func.vmap(lambda d: torch.func.jvp(f, (theta,), (d,))[1])(flat)
    else:
        if eps is None:
            eps = 1e-3 if theta.dtype == torch.float32 else 1e-6
        e = eps * theta.norm() / flat.norm(dim=1).clamp_min(1e-30)
        scores = torch.stack([(f(theta + ej * d) - f(theta - ej * d)) / (2 * ej) for d, ej in zip(flat, e)])
    return scores.T.contiguous()
