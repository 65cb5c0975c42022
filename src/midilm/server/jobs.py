"""A bounded job queue served by worker threads.

Model inference is CPU- or GPU-bound and torch releases the GIL in its kernels, so worker
threads run jobs truly side by side while the event loop keeps answering. The queue is
bounded: when ``queue_size`` jobs already wait, :meth:`JobQueue.submit` raises
:class:`QueueFullError` with a retry estimate (the HTTP layer answers 429).

A job is a function of its :class:`Job`. Long jobs call :meth:`Job.check` between steps
(after each bar): it raises :class:`JobCancelled` once the job was cancelled (by the
client, by a disconnect) or ran past its time limit. A job cannot be stopped inside a step:
cancelling is cooperative. Progress is published to subscribers on asyncio loops (the
server-sent events) with :meth:`Job.publish`.

This module knows nothing of HTTP or of models.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Job", "JobCancelled", "JobQueue", "QueueFullError"]

log = logging.getLogger("midilm.server")

_KEEP_FINISHED = 64  # finished jobs kept for GET /jobs/{id} (their results are dropped)


class QueueFullError(Exception):
    """Every worker is busy and the queue is full; ``retry_after_s`` estimates when a place
    frees up."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the server is busy; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class JobCancelled(Exception):
    """Raised inside a job by :meth:`Job.check` once it must stop; ``reason`` is
    ``"cancelled"`` or ``"timeout"``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Job:
    """One unit of work and what became of it.

    ``state``: ``queued`` → ``running`` → ``done`` | ``failed`` | ``cancelled``.
    ``result`` / ``error`` hold the outcome; ``progress`` the last ``(done, total)``;
    ``cancel_reason`` is ``"cancelled"`` or ``"timeout"`` for a cancelled job.
    """

    def __init__(
        self, kind: str, fn: Callable[[Job], Any], *, timeout_s: float, model: str | None = None
    ) -> None:
        self.id = secrets.token_hex(8)
        self.kind = kind
        self.model = model
        self.state = "queued"
        self.result: Any = None
        self.error: BaseException | None = None
        self.progress: tuple[int, int | None] = (0, None)
        self.cancel_reason: str | None = None
        self.timeout_s = timeout_s
        self.created_s = time.monotonic()
        self.started_s: float | None = None
        self.finished_s: float | None = None
        self._fn = fn
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]] = []

    # ---- the worker's side
    def check(self) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled or is past its deadline."""
        if self._cancel.is_set():
            raise JobCancelled(self.cancel_reason or "cancelled")
        if self.started_s is not None and time.monotonic() - self.started_s > self.timeout_s:
            self.cancel("timeout")
            raise JobCancelled("timeout")

    def publish(self, event: dict[str, Any]) -> None:
        """Send a progress event (``{"kind": "bar", "done": …, "total": …}``) to every
        subscriber; thread-safe."""
        if "done" in event:
            self.progress = (int(event["done"]), event.get("total"))
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            _put(loop, queue, event)

    # ---- everyone's side
    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self, reason: str = "cancelled") -> bool:
        """Ask the job to stop (it stops at its next :meth:`check`); False if it had
        finished already."""
        if self.finished:
            return False
        if not self._cancel.is_set():
            self.cancel_reason = reason
            self._cancel.set()
        return True

    def subscribe(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue[Any]:
        """An asyncio queue (of ``loop``) that receives each progress event and then
        ``None`` once the job has finished."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        with self._lock:
            if self.finished:
                queue.put_nowait(None)
            else:
                self._subscribers.append((loop, queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Any]) -> None:
        with self._lock:
            self._subscribers = [(lp, q) for lp, q in self._subscribers if q is not queue]

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the job has finished (threads and tests); False on timeout."""
        return self._finished.wait(timeout_s)

    def release(self) -> None:
        """Drop the outcome once it was delivered (a kept job keeps only its status)."""
        self.result = None
        self.error = None
        self._fn = _nothing

    @property
    def running_s(self) -> float:
        if self.started_s is None:
            return 0.0
        return (self.finished_s or time.monotonic()) - self.started_s

    # ---- the queue's side
    def _run(self) -> None:
        self.started_s = time.monotonic()
        self.state = "running"
        try:
            self.check()
            self.result = self._fn(self)
            self.state = "done"
        except JobCancelled as err:
            self.cancel_reason = self.cancel_reason or err.reason
            self.state = "cancelled"
        except Exception as err:  # noqa: BLE001 - handed to whoever awaits the job
            self.error = err
            self.state = "failed"
        finally:
            self._finish()

    def _finish(self) -> None:
        self.finished_s = time.monotonic()
        self._fn = _nothing
        with self._lock:
            self._finished.set()
            subscribers, self._subscribers = self._subscribers, []
        for loop, queue in subscribers:
            _put(loop, queue, None)


def _nothing(job: Job) -> None:
    return None


def _put(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any], item: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody listens any more
        loop.call_soon_threadsafe(queue.put_nowait, item)


class JobQueue:
    """``workers`` threads running jobs in arrival order; at most ``queue_size`` waiting."""

    def __init__(self, *, workers: int = 1, queue_size: int = 8, timeout_s: float = 120.0) -> None:
        if workers < 1:
            raise ValueError(f"workers must be ≥ 1, received {workers}")
        self.workers = workers
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self._pending: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}
        self._finished_ids: collections.deque[str] = collections.deque()
        self._running = 0
        self._counts: collections.Counter[str] = collections.Counter()
        self._mean_s = 5.0  # running mean of a job's duration, for Retry-After
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"midilm-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, kind: str, fn: Callable[[Job], Any], *, model: str | None = None) -> Job:
        """Queue ``fn`` as a job; :class:`QueueFullError` when the queue is full."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the job queue is shut down")
            if self._running + len(self._pending) >= self.workers + self.queue_size:
                raise QueueFullError(self._retry_after())
            job = Job(kind, fn, timeout_s=self.timeout_s, model=model)
            self._jobs[job.id] = job
            self._pending.append(job)
            self._cond.notify()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def stats(self) -> dict[str, Any]:
        """Queue depth and totals, for ``GET /health``."""
        with self._cond:
            return {
                "workers": self.workers,
                "running": self._running,
                "queued": len(self._pending),
                "queue_size": self.queue_size,
                "finished": dict(self._counts),
            }

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Cancel every job and stop the workers."""
        with self._cond:
            self._closed = True
            jobs = list(self._jobs.values())
            self._cond.notify_all()
        for job in jobs:
            job.cancel()
        for thread in self._threads:
            thread.join(timeout_s)

    def _retry_after(self) -> int:
        waiting = len(self._pending) + self._running
        return max(1, min(120, math.ceil(self._mean_s * waiting / self.workers)))

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    for job in self._pending:
                        job.state = "cancelled"
                        job.cancel_reason = job.cancel_reason or "cancelled"
                        job._finish()
                    self._pending.clear()
                    return
                job = self._pending.popleft()
                self._running += 1
            try:
                if job.cancelled:  # cancelled while it waited: never started
                    job.state = "cancelled"
                    job._finish()
                else:
                    job._run()
            finally:
                with self._cond:
                    self._running -= 1
                    self._counts[job.state] += 1
                    if job.started_s is not None and job.state == "done":
                        self._mean_s = 0.8 * self._mean_s + 0.2 * job.running_s
                    self._finished_ids.append(job.id)
                    while len(self._finished_ids) > _KEEP_FINISHED:
                        self._jobs.pop(self._finished_ids.popleft(), None)
            if job.state == "failed" and job.error is not None:
                log.debug("job %s (%s) failed: %r", job.id, job.kind, job.error)
