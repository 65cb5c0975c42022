"""Running phase 1 of ``midilm prepare``: the items without a record, in worker processes.

Each worker holds one :class:`~midilm.data.examples.ItemProcessor` and writes the records
of the small batches it is given; a bounded number of batches is in flight, so memory does
not grow with the corpus. Records are whole files named by their item, so the order in
which workers finish never shows in the dataset.

**Fork server.** Workers start from a clean process that imported what they need once
(MidiTok alone takes seconds), never from a fork of a process with threads (numpy's BLAS,
torch, tokenizers), which can deadlock; Python 3.14's default on Linux. ``spawn`` where
there is no fork server. Starting it costs an interpreter and those imports;
:func:`start_fork_server` lets a caller start it early, so that it loads them while the
caller does its own start-up on another core (``midilm prepare`` does, before it imports
anything heavy).

**A worker that dies** (a crash in a C library on one odd file) breaks the pool: the
batches it had in flight are set aside, a new pool carries on with the rest, and the
set-aside items are then run one per pool; an item that kills its worker again gets a
``failed`` record. Only this module's own imports run at import time (no numpy).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from midilm.data.examples import ItemProcessor
    from midilm.data.prepare_config import PrepareConfig

__all__ = ["cpu_count", "progress_bar", "run_items", "start_fork_server"]

Task = tuple[str, str]  # (item, record path)

_WORKER: ItemProcessor | None = None


def cpu_count() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def start_fork_server(kind: str) -> None:
    """Start the workers' fork server now, in the background, for a ``kind`` ("mmm" or
    "remi") preparation. Optional: the pool starts it when needed; nothing happens where
    there is no fork server."""
    import multiprocessing
    from multiprocessing import forkserver

    if "forkserver" in multiprocessing.get_all_start_methods():
        _mp_context(kind)
        forkserver.ensure_running()


def run_items(
    tasks: list[Task],
    config: PrepareConfig,
    workers: int,
    advance: Callable[[int], Any],
    meanwhile: Callable[[], Any] | None = None,
) -> None:
    """Make the record of each ``(item, path)`` task: in this process when ``workers`` is
    1 (or there is one task), else in a pool of ``workers`` processes. ``advance(n)`` is
    called as records are written. With a pool, ``meanwhile()`` is called once, as soon
    as the first batches are out: this process has nothing else to do while the workers
    work, so what it will need next (imports) is best loaded there, not after them."""
    if workers <= 1 or len(tasks) <= 1:
        from midilm.data.examples import ItemProcessor

        processor = ItemProcessor(config)
        for item, path in tasks:
            processor.run(item, Path(path))
            advance(1)
        return
    _run_pool(tasks, config, workers, advance, meanwhile)


# ---------------------------------------------------------------------- in the workers


def _init_worker(settings: dict[str, Any], run_pid: int) -> None:
    from midilm.data.examples import ItemProcessor
    from midilm.data.prepare_config import PrepareConfig

    global _WORKER  # noqa: PLW0603 - one processor per worker process, made once
    _WORKER = ItemProcessor(PrepareConfig.from_dict(settings))
    threading.Thread(target=_exit_with, args=(run_pid,), daemon=True).start()


def _exit_with(run_pid: int) -> None:
    """Stop this worker soon after the run that started it is gone. A run killed with
    SIGKILL cannot tell its pool; its workers would wait for work forever, and keep its fork
    server alive with them."""
    while True:
        time.sleep(0.5)
        try:
            os.kill(run_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # the number now belongs to another user's process
            os._exit(1)


def _ping() -> int:
    """A task that does nothing: does the pool start at all?"""
    return os.getpid()


def _run_batch(batch: list[Task]) -> list[tuple[str, str | None]]:
    assert _WORKER is not None, "worker not initialized"
    return [_WORKER.run(item, Path(path)) for item, path in batch]


# ---------------------------------------------------------------------- in the main process


def _run_pool(
    tasks: list[Task],
    config: PrepareConfig,
    workers: int,
    advance: Callable[[int], Any],
    meanwhile: Callable[[], Any] | None,
) -> None:
    """Run the tasks in a process pool, a bounded number of small batches in flight (see
    the module doc for a worker that dies)."""
    from midilm.data.work import record_is_valid

    context = _mp_context(config.tokenizer)
    workers = min(workers, len(tasks))
    # Small batches: little to wait for at the end, and a cheap retry if a worker dies.
    size = max(1, min(8, len(tasks) // (workers * 64)))
    pending = (tasks[i : i + size] for i in range(0, len(tasks), size))
    suspects: list[Task] = []
    while _drain(pending, config, workers, context, advance, suspects, meanwhile):
        meanwhile = None  # the pool broke: a new one takes the batches not yet submitted
    for item, path in suspects:
        if not record_is_valid(Path(path)):
            _run_isolated(item, path, config, context)
        advance(1)


def _drain(
    pending: Iterator[list[Task]],
    config: PrepareConfig,
    workers: int,
    context: Any,
    advance: Callable[[int], Any],
    suspects: list[Task],
    meanwhile: Callable[[], Any] | None = None,
) -> bool:
    """Run batches from ``pending`` in one pool until none is left (``False``) or the pool
    breaks (``True``; the batches in flight are added to ``suspects``)."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(config.to_dict(), os.getpid()),
    ) as pool:
        in_flight: dict[Any, list[Task]] = {}
        try:
            # The first batches go out at once (the workers start as they are submitted);
            # a pool that cannot start at all shows in the first result.
            first = True
            while True:
                while len(in_flight) < workers * 4:
                    batch = next(pending, None)
                    if batch is None:
                        break
                    try:
                        in_flight[pool.submit(_run_batch, batch)] = batch
                    except BrokenProcessPool:
                        suspects.extend(batch)
                        suspects.extend(task for b in in_flight.values() for task in b)
                        return True
                if not in_flight:
                    return False
                if meanwhile is not None:
                    meanwhile()
                    meanwhile = None
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for future in done:
                    batch = in_flight.pop(future)
                    try:
                        advance(len(future.result()))
                    except BrokenProcessPool as err:
                        if first:
                            _check_pool(context, config, err)
                        suspects.extend(batch)
                        suspects.extend(task for b in in_flight.values() for task in b)
                        return True
                    first = False
        except BaseException:
            # Ctrl-C, or an error in this process: stop at once; finished records stay.
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _run_isolated(item: str, path: str, config: PrepareConfig, context: Any) -> None:
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from midilm.data.examples import rejection
    from midilm.data.work import write_record

    with ProcessPoolExecutor(
        max_workers=1,
        mp_context=context,
        initializer=_init_worker,
        initargs=(config.to_dict(), os.getpid()),
    ) as pool:
        try:
            pool.submit(_run_batch, [(item, path)]).result()
            return
        except BrokenProcessPool as err:
            _check_pool(context, config, err)
    detail = "the process reading it died (a crash in a library, or out of memory)"
    write_record(Path(path), rejection(item, "failed", detail), {})


def _check_pool(context: Any, config: PrepareConfig, err: BaseException) -> None:
    """After a broken pool: fail the run (not the files) when worker processes cannot
    start at all, which a pool that only runs the empty task tells."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from midilm.data.shards import DatasetError

    try:
        with ProcessPoolExecutor(
            max_workers=1,
            mp_context=context,
            initializer=_init_worker,
            initargs=(config.to_dict(), os.getpid()),
        ) as pool:
            pool.submit(_ping).result()
    except BrokenProcessPool:
        raise DatasetError(
            "the worker processes could not start (see the messages above); a script that "
            "calls prepare() with workers > 1 must do so under 'if __name__ == \"__main__\":'"
        ) from err


def _mp_context(kind: str) -> Any:
    """The fork server's context (see the module doc), with the modules its workers need
    preloaded; ``spawn`` where there is no fork server."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        tokenizer = "midilm.tokenization.mmm" if kind == "mmm" else "midilm.tokenization.remi"
        context.set_forkserver_preload(
            ["midilm.data.examples", "midilm.data.augment", "midilm.score", tokenizer]
        )
        return context
    return multiprocessing.get_context("spawn")


# ---------------------------------------------------------------------- progress


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(enabled: bool, *, total: int, initial: int = 0, desc: str) -> Any:
    """A tqdm bar on stderr counting files, or a stand-in that shows nothing."""
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="file",
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
    )
