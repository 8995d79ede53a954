"""Blocking calls awaited from the event loop, each in its own daemon thread.

Not the loop's default executor: its threads are joined at exit, so a call stuck in the kernel (a stalled
disk, a first kernel compile) would hold a SIGTERM'd daemon forever; a daemon thread does not.
"""
from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Callable


def in_daemon_thread(fn: Callable[..., Any], *args: Any, name: str = "offload") -> asyncio.Future:
    """Run fn(*args) in a new daemon thread; the returned future (of the running loop) gets its outcome.

    Cancelling the future does not stop the call: its outcome is then dropped.
    """
    done, work = _job(fn, args)
    threading.Thread(target=work, name=name, daemon=True).start()
    return done


class DaemonWorker:
    """One long-lived daemon thread running calls in order (a frequent call, such as the sink's flush every
    50 ms, need not start a thread each time); submit() as in_daemon_thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        done, work = _job(fn, args)
        self._jobs.put(work)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return done

    def _run(self) -> None:
        while True:
            self._jobs.get()()


def _job(fn: Callable[..., Any], args: tuple) -> tuple[asyncio.Future, Callable[[], None]]:
    """A future of the running loop, and the call that settles it from another thread."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if not done.done():
            done.set_exception(error) if error is not None else done.set_result(result)

    def work() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as e:  # handed to the awaiting task
            result, error = None, e
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    return done, work
