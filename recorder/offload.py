"""Blocking calls awaited from the event loop, each in its own daemon thread.

Not the loop's default executor: its threads are joined at exit, so a call stuck in the kernel (a stalled
disk, a first kernel compile) would hold a SIGTERM'd daemon forever; a daemon thread does not.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable


def in_daemon_thread(fn: Callable[..., Any], *args: Any, name: str = "offload") -> asyncio.Future:
    """Run fn(*args) in a new daemon thread; the returned future (of the running loop) gets its outcome.

    Cancelling the future does not stop the call: its outcome is then dropped.
    """
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

    threading.Thread(target=work, name=name, daemon=True).start()
    return done
