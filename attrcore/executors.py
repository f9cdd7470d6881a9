"""Where independent tasks run: in this process, through ``joblib``, or on a Dask cluster.

One abstraction for every parallel job of the package — the ground-truth retraining
(:mod:`attrcore.evaluation.executors`) and the sharded simulation
(:mod:`attrcore.engine.shard`)::

    with Executor.resolve(workers=2) as ex:            # a LocalCluster of 2 processes
        for i, out in ex.map_unordered(fn, items, shared=(X, y)):
            ...                                        # out = fn(items[i], X, y)
    ex.report                                          # engine, workers, retried tasks

- ``Executor.resolve()`` — in process (no flag);
- ``Executor.resolve(n_jobs=-1)`` — joblib on this machine's cores;
- ``Executor.resolve(workers=N)`` — a Dask ``LocalCluster`` of N single-thread processes,
  started here and closed with the executor;
- ``Executor.resolve(scheduler="tcp://host:8786")`` (or a ``distributed.Client``) — an
  existing Dask cluster.

A task must be a deterministic function of its arguments, run with one torch thread (the
tasks of this package set it), so its result does not depend on where it ran. A worker
process that dies mid-task is not a lost result: Dask reschedules the task on another
worker (up to :data:`DASK_ALLOWED_FAILURES` times), joblib reruns the unfinished tasks in a
fresh pool; either way the task is counted in :attr:`ExecutionReport.retried` and shown to
the caller, and a task that keeps killing its worker raises :class:`ExecutionError`.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError as FutureCancelledError
from dataclasses import dataclass, field

from joblib import Parallel, delayed
from joblib.externals.loky.process_executor import TerminatedWorkerError

from .errors import AttrcoreError, ConfigError

DASK_CONNECT_TIMEOUT = "20s"
DASK_ALLOWED_FAILURES = 3  # worker deaths a task may cause before it is given up
JOBLIB_RETRIES = 2  # fresh pools joblib may start after a worker died
# an own LocalCluster left with no live worker this long (a nanny that failed to restart
# its worker, e.g. a slow start on a loaded machine) gets a new worker
DASK_WATCH_SECONDS = 5.0
DASK_NO_WORKER_SECONDS = 20.0
DASK_WORKER_START_SECONDS = 120.0  # how long a replacement may take to come up before another


class ExecutionError(AttrcoreError):
    """A task could not be completed: its worker died on every attempt."""


@dataclass
class ExecutionReport:
    """What happened: the engine, its workers, tasks run and the ones retried after a death.

    ``retried`` maps a task's number (counted over every map of this executor) to the number
    of times its worker died under it (the task was then rerun elsewhere; its result is
    complete).
    """

    engine: str  # "in-process" | "joblib" | "dask"
    workers: int
    tasks: int = 0
    retried: dict[int, int] = field(default_factory=dict)
    address: str | None = None
    unknown: list[int] = field(default_factory=list)  # tasks whose retries the scheduler did not tell
    replaced: int = 0  # workers started anew because a dead one did not come back

    @property
    def n_retried(self) -> int:
        return len(self.retried)

    def to_dict(self) -> dict:
        return {
            "engine": self.engine,
            "workers": self.workers,
            "tasks": self.tasks,
            "retried": {str(k): v for k, v in sorted(self.retried.items())},
            "address": self.address,
            "retries_unknown": list(self.unknown),
            "replaced_workers": self.replaced,
        }

    def summary(self) -> str:
        s = f"{self.tasks} task(s) on {self.engine} ({self.workers} worker(s))"
        if self.retried:
            s += f"; {self.n_retried} retried after a worker died: " + ", ".join(
                f"task {k} ({v}×)" for k, v in sorted(self.retried.items())
            )
        if self.replaced:
            s += f"; {self.replaced} worker(s) that did not restart replaced"
        return s


def _suspicious(dask_scheduler, keys):  # runs on the scheduler
    tasks = dask_scheduler.tasks
    return {k: int(tasks[k].suspicious) for k in keys if k in tasks}


class Executor:
    """Runs ``fn(item, *shared)`` for every item; see the module docstring."""

    def __init__(
        self, engine: str = "in-process", *, n_jobs: int = 1, client=None, cluster=None, own_client: bool = False
    ):
        self.engine = engine
        self.n_jobs = n_jobs
        self.client = client
        self._cluster = cluster
        self._own_client = own_client
        self.report = ExecutionReport(engine, self.n_workers, address=self.address)

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def resolve(
        cls, scheduler=None, workers: int | None = None, n_jobs: int = 1, memory_limit_mb: float | None = None
    ) -> Executor:
        """The executor the options ask for (``scheduler`` wins over ``workers`` over ``n_jobs``)."""
        if isinstance(scheduler, Executor):
            return scheduler
        if scheduler is not None and workers is not None:
            raise ConfigError(
                "give either a Dask scheduler address or a number of local workers, not both; "
                "a scheduler's workers are started with `dask worker ADDRESS`."
            )
        if scheduler is not None:
            return cls._connect(scheduler)
        if workers is not None:
            if not (isinstance(workers, int) and workers >= 1):
                raise ConfigError(f"workers must be a whole number ≥ 1, got {workers!r}.")
            return cls._local_cluster(workers, memory_limit_mb)
        if not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
            raise ConfigError(f"jobs must be -1 (all cores) or a whole number ≥ 1, got {n_jobs!r}.")
        return cls("joblib" if n_jobs != 1 else "in-process", n_jobs=n_jobs)

    @classmethod
    def _distributed(cls):
        try:
            import distributed  # heavy (~1 s): imported only when a Dask executor is asked for
        except ImportError:  # pragma: no cover - distributed is in requirements.txt
            raise ConfigError(
                "Dask was asked for but the 'distributed' package is missing; "
                "install it with `pip install distributed`."
            ) from None
        return distributed

    @classmethod
    def _connect(cls, scheduler) -> Executor:
        distributed = cls._distributed()
        if isinstance(scheduler, distributed.Client):
            return cls("dask", client=scheduler)
        try:
            client = distributed.Client(scheduler, timeout=DASK_CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as err:
            raise ConfigError(
                f"could not connect to the Dask scheduler at {scheduler!r} ({err}); check the "
                "address (tcp://host:8786) and that `dask scheduler` and its workers are running."
            ) from None
        return cls("dask", client=client, own_client=True)

    @classmethod
    def _local_cluster(cls, workers: int, memory_limit_mb: float | None) -> Executor:
        distributed = cls._distributed()
        import dask  # with distributed: only for a Dask executor

        one_thread = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        with dask.config.set({"distributed.scheduler.allowed-failures": DASK_ALLOWED_FAILURES}):
            cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                memory_limit=f"{int(memory_limit_mb)}MiB" if memory_limit_mb else "auto",
                env=one_thread,
                silence_logs=40,
            )
            client = distributed.Client(cluster)
        return cls("dask", client=client, cluster=cluster, own_client=True)

    # ---- properties ----------------------------------------------------------------------
    @property
    def distributed(self) -> bool:
        """True when tasks run outside this process (joblib or Dask)."""
        return self.engine != "in-process"

    @property
    def n_workers(self) -> int:
        if self.engine == "dask":
            spec = getattr(self._cluster, "worker_spec", None)
            if spec:  # our LocalCluster: the workers it was asked for, even while one is (re)starting
                return len(spec) - self._replaced_workers()
            return max(1, len(self.client.scheduler_info().get("workers", {})))
        if self.engine == "joblib":
            return (os.cpu_count() or 1) if self.n_jobs == -1 else self.n_jobs
        return 1

    def _replaced_workers(self) -> int:
        report = getattr(self, "report", None)  # n_workers is asked while the report is made
        return report.replaced if report is not None else 0

    @property
    def address(self) -> str | None:
        return None if self.client is None else self.client.scheduler.address

    # ---- running ---------------------------------------------------------------------------
    def map_unordered(self, fn: Callable, items: Sequence, shared: tuple = ()) -> Iterator[tuple[int, object]]:
        """Yield ``(i, fn(items[i], *shared))`` as tasks finish (any order).

        ``shared`` (e.g. the training arrays) is sent once, not per task.
        Close the generator (``contextlib.closing``) to stop early: queued tasks are cancelled.
        """
        base = self.report.tasks  # report keys are global task numbers: base + i
        self.report.tasks += len(items)
        if not items:
            return
        if self.engine == "dask":
            yield from self._dask(fn, items, shared, base)
        elif self.engine == "joblib" and len(items) > 1:
            yield from self._joblib(fn, items, shared, base)
        else:
            for i, item in enumerate(items):
                yield i, fn(item, *shared)

    def _joblib(self, fn, items, shared, base: int):
        todo = list(range(len(items)))
        for attempt in range(JOBLIB_RETRIES + 1):
            done: set[int] = set()
            parallel = Parallel(n_jobs=self.n_jobs, return_as="generator_unordered")
            try:
                for i, out in parallel(delayed(_indexed)(i, fn, items[i], shared) for i in todo):
                    done.add(i)
                    yield i, out
                return
            except TerminatedWorkerError:
                todo = [i for i in todo if i not in done]
                for i in todo:
                    self.report.retried[base + i] = self.report.retried.get(base + i, 0) + 1
                if attempt == JOBLIB_RETRIES:
                    raise ExecutionError(
                        f"{len(todo)} task(s) did not finish: a joblib worker died {attempt + 1} times "
                        "(out of memory?); lower the memory budget or the number of jobs."
                    ) from None

    def _dask(self, fn, items, shared, base: int):
        """Submit every task; the shared data goes as tasks of its own, so it has lineage.

        Scattered data (``client.scatter``) cannot be recomputed: when the worker holding
        it dies the waiting tasks are cancelled ("lost scattered data") and, on a loaded
        machine, a replacement worker may come up only much later. A task that returns the
        data is recomputed by the scheduler on whichever worker is up, like any other task
        lost with a worker, so a worker death never needs handling here.
        """
        distributed = self._distributed()
        client = self.client
        sent: list = []
        futures: list = []
        try:
            with warnings.catch_warnings():  # "large graph": the data is sent once, on purpose
                warnings.simplefilter("ignore", UserWarning)
                sent = [client.submit(_identity, x, pure=False) for x in shared]
                futures = [client.submit(fn, item, *sent, pure=False) for item in items]
            index = {f.key: i for i, f in enumerate(futures)}
            for fut in self._as_completed(distributed, futures):
                i = index[fut.key]
                try:
                    out = fut.result()
                except distributed.KilledWorker:
                    raise ExecutionError(
                        f"task {i} of {len(items)} killed its worker {DASK_ALLOWED_FAILURES} times and was "
                        "given up (out of memory?); lower the memory budget or use more, smaller shards."
                    ) from None
                except FutureCancelledError:
                    raise ExecutionError(
                        f"task {i} of {len(items)} was cancelled on the Dask cluster (was the scheduler or "
                        "client restarted?); run again."
                    ) from None
                self._note_retries(fut.key, base + i)
                yield i, out
        finally:
            if futures or sent:
                client.cancel(futures + sent)

    def _as_completed(self, distributed, futures):
        """The futures as they finish; while waiting, an own cluster left without a live
        worker for ``DASK_NO_WORKER_SECONDS`` is given a new one (the tasks would wait forever)."""
        pending = list(futures)
        no_worker_since = None
        while pending:
            try:
                done, rest = distributed.wait(pending, timeout=DASK_WATCH_SECONDS, return_when="FIRST_COMPLETED")
            except TimeoutError:
                no_worker_since = self._watch_workers(no_worker_since)
                continue
            no_worker_since = None
            pending = list(rest)
            yield from done

    def _watch_workers(self, since: float | None) -> float | None:
        if self._cluster is None:  # someone else's scheduler: its workers are theirs to manage
            return None
        if self.client.scheduler_info().get("workers"):
            return None
        now = time.monotonic()
        if since is None:
            return now
        if now - since < DASK_NO_WORKER_SECONDS:
            return since
        self._cluster.scale(len(self._cluster.worker_spec) + 1)
        self.report.replaced += 1
        try:  # a worker starts in seconds to a minute (more on a loaded machine): give it that
            self.client.wait_for_workers(1, timeout=DASK_WORKER_START_SECONDS)
        except TimeoutError:
            pass  # still none: the next watch replaces it again
        return None

    def _note_retries(self, key, i: int) -> None:
        """Worker deaths under task ``i``, from the scheduler (asked again if it is busy)."""
        for attempt in range(3):
            try:
                deaths = self.client.run_on_scheduler(_suspicious, keys=[key]).get(key, 0)
                break
            except Exception:  # noqa: BLE001 - a busy or refusing scheduler: ask again, then give up
                time.sleep(0.5 * (attempt + 1))
        else:
            self.report.unknown.append(i)
            return
        if deaths:
            self.report.retried[i] = deaths

    # ---- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        if self._own_client and self.client is not None:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
        self.client = self._cluster = None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _identity(x):
    return x


def _indexed(i, fn, item, shared):
    return i, fn(item, *shared)
