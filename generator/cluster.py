"""Where the per-unit work of a job runs: threads of this process (the default) or a dask.distributed cluster.

Sources hand their units of work (AEF: read two years and compute a block group; Earth Engine: download a
tile) to an ``Executor``. ``ThreadExecutor`` runs them on a pool of threads here. ``DaskExecutor`` runs them
as tasks on the workers of a dask scheduler (``tcp://host:port``) or of a ``LocalCluster`` it starts
(``local:N``). Either way results come back in submission order with at most ``ahead`` units outstanding,
so the process that writes the COG holds a bounded number of result blocks whatever the region's size:
finished tasks keep their results on the workers until they are consumed here.

Task functions must be module-level (picklable) and idempotent: dask reruns the tasks of a worker that
dies on another worker, so a unit may run twice; nothing here depends on which run's result arrives.
"""

from __future__ import annotations

import itertools
import re
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from generator.errors import ChangecatError, ConfigError, SourceError

T = TypeVar("T")

SCHEDULER_FORMS = (
    "tcp://HOST:PORT (the address of a running dask scheduler, e.g. tcp://10.0.0.5:8786) or local:N "
    "(a LocalCluster of N worker processes on this machine, 1 ≤ N ≤ {max})"
)
CONNECT_TIMEOUT_S = 20
"""Seconds to wait for a dask scheduler to answer before the run fails naming it (distributed's own
default, ``distributed.comm.timeouts.connect``, is 30 s and then retries)."""
MAX_LOCAL_WORKERS = 256
"""Upper bound of N in ``local:N``: more worker processes than that on one machine is a typo."""
TASKS_PER_THREAD = 2
"""Units kept submitted (running, queued or finished and not yet consumed) per worker thread of the
cluster: enough that no worker waits for the writer, few enough that results held on the workers stay
small (an AEF unit's float32 result is at most 4 MB)."""
LOCAL_START_TIMEOUT_S = 120
"""Seconds a ``local:N`` cluster may take to start its worker processes."""
_ADDRESS = re.compile(r"^(tcp|tls|ws|wss|inproc|ucx)://[^\s/]+(:\d+)?$")
_LOCAL = re.compile(r"^local:(\d+)$")


def parse_scheduler(address: str) -> tuple[str, str | int]:
    """("local", N) or ("remote", address) from a ``--scheduler`` value; ConfigError names valid forms."""
    text = address.strip()
    if m := _LOCAL.match(text):
        n = int(m[1])
        if 1 <= n <= MAX_LOCAL_WORKERS:
            return ("local", n)
    elif _ADDRESS.match(text):
        return ("remote", text)
    raise ConfigError(f"--scheduler {address!r}: expected {SCHEDULER_FORMS.format(max=MAX_LOCAL_WORKERS)}")


class Executor(ABC):
    """Runs a source's units of work; ``remote`` executors need module-level, picklable functions."""

    remote: bool = False

    @abstractmethod
    def map(self, fn: Callable[[Any], T], items: Iterable[Any], ahead: int | None = None) -> TaskStream[T]:
        """``fn`` on every item, results in the items' order, at most ``ahead`` items outstanding. Units
        are submitted at once (up to ``ahead``): a stream made early overlaps the work before it."""

    def threads(self) -> int:
        """Units that run at once."""
        return 1

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the pool or the cluster connection."""


class TaskStream(Iterator[T]):
    """Results of an Executor.map, in order; ``cancel`` drops what was not consumed."""

    def __init__(
        self,
        submit: Callable[[Any], Any],
        result: Callable[[Any], T],
        cancel: Callable[[Any], None],
        items: Iterable[Any],
        ahead: int,
        done: Callable[[], None] | None = None,
    ) -> None:
        self._submit, self._result, self._cancel, self._done = submit, result, cancel, done
        self._items = iter(items)
        self._pending: deque[Any] = deque()
        self._ahead = max(1, ahead)
        self._closed = False
        self._fill()

    def _fill(self) -> None:
        while len(self._pending) < self._ahead:
            item = next(self._items, _END)
            if item is _END:
                return
            self._pending.append(self._submit(item))

    def __next__(self) -> T:
        if not self._pending:
            self.cancel()
            raise StopIteration
        handle = self._pending.popleft()
        try:
            value = self._result(handle)
        except BaseException:
            self.cancel()
            raise
        self._fill()
        return value

    def cancel(self) -> None:
        """Cancel the units not consumed yet (a finished unit's result is released)."""
        if self._closed:
            return
        self._closed = True
        while self._pending:
            self._cancel(self._pending.popleft())
        self._items = iter(())
        if self._done is not None:
            self._done()


_END = object()


class ThreadExecutor(Executor):
    """Threads of this process (daemon threads: a stalled read never holds up Ctrl-C)."""

    def __init__(self, threads: int) -> None:
        self._threads = threads

    def threads(self) -> int:
        return self._threads

    def map(self, fn: Callable[[Any], T], items: Iterable[Any], ahead: int | None = None) -> TaskStream[T]:
        from generator.sources.aef_read import DaemonPool

        pool = DaemonPool(self._threads)
        return TaskStream(
            lambda item: pool.submit(fn, item),
            Future.result,
            Future.cancel,
            items,
            ahead or self._threads + 1,
            done=pool.shutdown,
        )


class DaskExecutor(Executor):
    """Tasks on a dask.distributed cluster: a running scheduler's address, or a LocalCluster started here."""

    remote = True

    def __init__(self, scheduler: str) -> None:
        from distributed import Client, LocalCluster

        kind, value = parse_scheduler(scheduler)
        self.address = scheduler
        self._cluster: Any = None
        self._priority = itertools.count()
        try:
            if kind == "local":
                self._cluster = LocalCluster(
                    n_workers=int(value),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    silence_logs=40,  # logging.ERROR: the progress bar is the run's output
                )
                self.client = Client(self._cluster, timeout=LOCAL_START_TIMEOUT_S)
            else:
                self.client = Client(str(value), timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise SourceError(
                f"cannot reach the dask scheduler at {scheduler} within {CONNECT_TIMEOUT_S} s ({exc}): "
                "is it running and is its port open from this machine?"
            ) from None
        self.address = scheduler if kind == "remote" else self.client.scheduler.address

    def workers(self) -> dict[str, int]:
        """Worker address → its threads."""
        info = self.client.scheduler_info(n_workers=-1) if _accepts_n_workers(self.client) else None
        info = info or self.client.scheduler_info()
        return {addr: int(w.get("nthreads", 1)) for addr, w in info.get("workers", {}).items()}

    def threads(self) -> int:
        return max(1, sum(self.workers().values()))

    def map(self, fn: Callable[[Any], T], items: Iterable[Any], ahead: int | None = None) -> TaskStream[T]:
        # Earlier streams first: a stream made ahead of its job (see changecat.run_executor) only takes the
        # workers the current job leaves idle.
        priority = -next(self._priority)
        return TaskStream(
            lambda item: self.client.submit(fn, item, pure=False, priority=priority),
            _gather,
            lambda future: future.release(),
            items,
            ahead or TASKS_PER_THREAD * self.threads(),
        )

    def run_on_workers(self, fn: Callable[[], Any]) -> dict[str, Any]:
        """``fn()`` on every worker: worker address → its result or the exception it raised."""
        return self.client.run(fn, on_error="return")

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


def _gather(future: Any) -> Any:
    """A task's result; a failure that is not one of ours (a worker killed too often, an exception the
    client could not unpickle, a lost scheduler) becomes a SourceError, so it fails the job, not the run."""
    try:
        return future.result()
    except (ChangecatError, OSError):
        raise
    except Exception as exc:
        error = SourceError(f"a task failed on the dask cluster: {type(exc).__name__}: {exc}")
    finally:
        future.release()
    raise error


def _accepts_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def worker_address() -> str:
    """The address of the dask worker running the current task ("this process" outside a worker)."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "this process"


LOOKAHEAD_STREAMS = 2
"""Streams started ahead of their job kept at once (the next job's, and the current one's until taken);
an older one is cancelled, so a job that never ran (no data, failed) holds nothing on the workers."""


class Lookahead:
    """Streams started before their job (``Source.prefetch``), by the job's key, taken by its ``compute``."""

    def __init__(self) -> None:
        self._streams: dict[Any, TaskStream] = {}

    def put(self, key: Any, stream: TaskStream) -> None:
        old = self._streams.pop(key, None)
        if old is not None:
            old.cancel()
        self._streams[key] = stream
        while len(self._streams) > LOOKAHEAD_STREAMS:
            self._streams.pop(next(iter(self._streams))).cancel()

    def take(self, key: Any) -> TaskStream | None:
        return self._streams.pop(key, None)

    def __contains__(self, key: Any) -> bool:
        return key in self._streams

    def clear(self) -> None:
        while self._streams:
            self._streams.popitem()[1].cancel()


class Secret:
    """A value (credentials) carried to the workers whose repr never shows it: dask logs a failed task's
    arguments."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    def __getstate__(self) -> Any:
        return self.value

    def __setstate__(self, state: Any) -> None:
        self.value = state


def open_executor(scheduler: str | None, threads: int) -> Executor:
    """The executor for a run: threads of this process without ``scheduler``, else a dask cluster."""
    return ThreadExecutor(threads) if scheduler is None else DaskExecutor(scheduler)
