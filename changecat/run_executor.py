"""A run on a dask.distributed cluster (``changecat run --scheduler``): connect, check that every worker can
open the source, hand the cluster to the source, and start each job's units while the job before it is
being written, so the cluster stays busy between jobs (many small regions included).

Only the read-and-compute of the units runs on the workers; the COG, statistics, hotspots, quicklook and
catalog are written by this process exactly as in a local run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from rasterio.windows import Window

from generator.cluster import LOOKAHEAD_STREAMS, DaskExecutor, Executor
from generator.errors import SourceError
from generator.plan import Job
from generator.sources.base import Source

WORKERS_TIMEOUT_S = 60
"""Seconds to wait for a scheduler without workers to get its first one (a cluster that is scaling up)."""


class _Planned(Protocol):
    job: Job
    reason: str | None


def attach(source: Source, scheduler: str | None, note: Callable[[str], None]) -> Executor | None:
    """Connect to ``scheduler`` (None: a local run), check the workers, hand the cluster to the source."""
    if scheduler is None:
        return None
    executor = DaskExecutor(scheduler)
    try:
        _wait_for_workers(executor)
        check_workers(executor, source)
        source.use_executor(executor)
        workers = executor.workers()
        note(
            f"running on the dask cluster at {executor.address}: {len(workers)} worker(s), "
            f"{sum(workers.values())} thread(s)"
        )
    except BaseException:
        executor.close()
        raise
    return executor


def _wait_for_workers(executor: DaskExecutor) -> None:
    try:
        executor.client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
    except TimeoutError:
        raise SourceError(
            f"the dask scheduler at {executor.address} has no worker after {WORKERS_TIMEOUT_S} s: "
            "start workers with `dask worker <scheduler address>` (or scale the cluster up)"
        ) from None


def check_workers(executor: DaskExecutor, source: Source) -> None:
    """Open the source on every worker; one SourceError naming the first worker that cannot (and how many
    others failed), rather than every job failing with the same cause."""
    check = source.worker_check()
    if check is None:
        return
    results = executor.run_on_workers(check)
    failed = {addr: r for addr, r in sorted(results.items()) if isinstance(r, BaseException)}
    if not failed:
        return
    addr, error = next(iter(failed.items()))
    text = str(error) if addr in str(error) else f"worker {addr}: {error}"
    more = f" ({len(failed) - 1} other worker(s) failed too)" if len(failed) > 1 else ""
    need = "workers need changecat, network access to the source and its credentials"
    raise SourceError(f"{text}{more}; {need}")


def prefetch_next(
    source: Source, upcoming: Sequence[_Planned], windows_of: Callable[[Job], list[Window]]
) -> None:
    """Make sure the next ``LOOKAHEAD_STREAMS`` jobs that will be made (of ``upcoming``, the current one
    first) have their units submitted, in that order: the current job's units go first on the workers
    (streams made earlier have the higher priority), the next one's fill the workers it leaves idle."""
    if source.executor is None or not source.executor.remote:
        return
    todo = [plan.job for plan in upcoming if plan.reason is not None][:LOOKAHEAD_STREAMS]
    for job in todo:
        source.prefetch(job.grid, job.from_year, job.to_year, job.method, windows_of(job))
