"""Heavy work of the web app: one background worker thread, a queue, and job state the page polls.

Every heavy step (generate or import a capture, reconstruct, grasps, demos, train, evaluate, export) is
a `Job` run by the app's single `JobRunner` thread, one at a time in submission order, so two users (or
two tabs) never write into a run at once. A job belongs to the app, not to a browser tab: closing the tab
leaves it running, and a reopened page finds it (`JobRunner.find`) and shows its progress. Submitting a
step that is already queued or running for the same run attaches to that job instead of starting another.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Job", "JobContext", "JobRunner", "format_seconds"]

log = logging.getLogger("splatsim.app")

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
_USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError)
"""Errors whose message is shown as it is (they name the file, field and fix); others add a type name."""


def format_seconds(s: float | None) -> str:
    """``75`` -> ``"1 min 15 s"``; None -> ``"?"``."""
    if s is None or s != s or s == float("inf"):
        return "?"
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


@dataclass
class Job:
    """One heavy step: its state while queued, running and after."""

    id: str
    run: str
    stage: str
    title: str
    status: str = QUEUED
    done: float | None = None
    """Units of work done (steps, episodes)."""
    total: float | None = None
    unit: str = "steps"
    message: str = ""
    error: str | None = None
    result: Any = None
    curve: list[tuple[int, float]] = field(default_factory=list)
    """(step, loss) points for live curves."""
    logs: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    version: int = 0
    """Bumped on every change (the page redraws only when it moves)."""
    waiters: set[str] = field(default_factory=set)
    """Page sessions waiting for the result in a request of their own (they need no reload)."""
    _event: threading.Event = field(default_factory=threading.Event, repr=False)
    _rate_start: tuple[float, float] | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.status in (QUEUED, RUNNING)

    @property
    def fraction(self) -> float | None:
        if self.done is None or not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))

    def eta_s(self) -> float | None:
        """Seconds left, from the rate since the first progress report (setup time excluded)."""
        if self.status != RUNNING or self._rate_start is None or self.done is None or not self.total:
            return None
        t0, d0 = self._rate_start
        dt, dd = time.time() - t0, self.done - d0
        if dd <= 0 or dt <= 0:
            return None
        return (self.total - self.done) * dt / dd

    def describe(self) -> str:
        """One line for the page: what, where, how far, ETA."""
        head = f"{self.title} (run {self.run})"
        if self.status == QUEUED:
            return f"{head}: queued"
        if self.status == FAILED:
            return f"{head}: failed: {self.error}"
        if self.status == DONE:
            took = (self.finished or 0) - (self.started or 0)
            return f"{head}: done in {format_seconds(took)}"
        parts = [head + ":"]
        if self.done is not None and self.total:
            parts.append(f"{self.done:.0f}/{self.total:.0f} {self.unit}")
        if self.message:
            parts.append(self.message)
        eta = self.eta_s()
        if eta is not None:
            parts.append(f"ETA {format_seconds(eta)}")
        elif self.started is not None:
            parts.append(f"{format_seconds(time.time() - self.started)} so far")
        return " · ".join(parts)

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until the job finished (done or failed) or ``timeout``; True if it finished."""
        return self._event.wait(timeout)


class JobContext:
    """What a job's work function reports through."""

    def __init__(self, job: Job, lock: threading.Lock) -> None:
        self._job, self._lock = job, lock

    def progress(
        self, done: float | None, total: float | None = None, message: str = "", unit: str = ""
    ) -> None:
        """Reports units of work done (of ``total``) and a short message (loss, phase)."""
        with self._lock:
            j = self._job
            if done is not None and j._rate_start is None:
                j._rate_start = (time.time(), float(done))
            j.done = None if done is None else float(done)
            if total is not None:
                j.total = float(total)
            if unit:
                j.unit = unit
            j.message = message
            j.version += 1

    def message(self, message: str) -> None:
        """Replaces the short message only (the units done stay)."""
        with self._lock:
            self._job.message = message
            self._job.version += 1

    def point(self, step: int, value: float) -> None:
        """Adds a point to the job's live curve."""
        with self._lock:
            self._job.curve.append((int(step), float(value)))
            self._job.version += 1

    def log(self, message: str) -> None:
        """Keeps the last 200 messages (shown under the progress)."""
        with self._lock:
            self._job.logs.append(str(message))
            del self._job.logs[:-200]
            self._job.version += 1


class JobRunner:
    """One worker thread running `Job`s in submission order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: list[Job] = []
        self._queue: queue.Queue[tuple[Job, Callable[[JobContext], Any]] | None] = queue.Queue()
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._worker, name="splatsim-app-jobs", daemon=True)
        self._thread.start()

    def submit(self, run: str, stage: str, title: str, work: Callable[[JobContext], Any]) -> Job:
        """Queues ``work(ctx)`` for (run, stage), or returns that step's job already queued or running."""
        with self._lock:
            for job in self._jobs:
                if job.run == run and job.stage == stage and job.active:
                    return job
            job = Job(id=f"job{next(self._ids)}", run=run, stage=stage, title=title)
            self._jobs.append(job)
            del self._jobs[: max(0, len(self._jobs) - 500)]
        self._queue.put((job, work))
        return job

    def find(self, run: str | None = None, stage: str | None = None, active_only: bool = False) -> list[Job]:
        """Jobs (newest last) of a run and/or stage."""
        with self._lock:
            return [
                j
                for j in self._jobs
                if (run is None or j.run == run)
                and (stage is None or j.stage == stage)
                and (not active_only or j.active)
            ]

    def latest(self, run: str, stage: str) -> Job | None:
        jobs = self.find(run, stage)
        return jobs[-1] if jobs else None

    def snapshot(self, job: Job) -> dict[str, Any]:
        """A consistent copy of a job's state for the page."""
        with self._lock:
            return {
                "id": job.id,
                "run": job.run,
                "stage": job.stage,
                "status": job.status,
                "fraction": job.fraction,
                "describe": job.describe(),
                "curve": list(job.curve),
                "logs": list(job.logs[-20:]),
                "version": job.version,
                "error": job.error,
            }

    def close(self, timeout: float = 5.0) -> None:
        """Stops the worker after the current job (queued jobs are dropped)."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, work = item
            with self._lock:
                job.status, job.started = RUNNING, time.time()
                job.version += 1
            ctx = JobContext(job, self._lock)
            try:
                result = work(ctx)
            except Exception as exc:  # a job never takes the worker down
                if isinstance(exc, _USER_ERRORS):
                    message = str(exc)
                else:
                    message = f"{type(exc).__name__}: {exc}"
                    log.error("job %s (%s) failed:\n%s", job.id, job.title, traceback.format_exc())
                with self._lock:
                    job.status, job.error, job.finished = FAILED, message, time.time()
                    job.version += 1
            else:
                with self._lock:
                    job.status, job.result, job.finished = DONE, result, time.time()
                    job.version += 1
            finally:
                job._event.set()
