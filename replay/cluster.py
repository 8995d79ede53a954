"""Replay hours on a Dask `distributed` cluster: one task per hour, retried on failure, results in hour order.

`--scheduler tcp://host:8786` submits to a running scheduler (its workers need booktape installed and the
dataset root at the same path or URL); `--scheduler local:N` starts a LocalCluster of N worker processes on
this machine for the run. Each task writes its hour's files atomically, exactly as a local job does, so the
output is byte-identical whatever the number of workers. `distributed` is the optional extra
`booktape[cluster]` and is imported only here, only when a scheduler is asked for.
"""
from __future__ import annotations

import re
import uuid
from contextlib import ExitStack
from typing import Callable, Sequence

_LOCAL = re.compile(r"^local:(\d+)$")
#: Times a failed hour is run again before the replay gives up on it.
RETRIES = 2


class ClusterError(RuntimeError):
    """The scheduler cannot be used (extra missing, bad address, unreachable)."""


def check(scheduler: str) -> None:
    """Validate a --scheduler value (local:N with N >= 1, or an address) before any work starts."""
    m = _LOCAL.match(scheduler)
    if m is None and not re.match(r"^(tcp|tls|inproc|ucx|ws|wss)://\S+$|^[\w.-]+:\d+$", scheduler):
        raise ClusterError(f"--scheduler {scheduler!r}: use local:N or a scheduler address like tcp://host:8786")
    if m is not None and int(m.group(1)) < 1:
        raise ClusterError("--scheduler local:N needs N >= 1 worker")


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ClusterError("--scheduler needs Dask distributed: pip install 'booktape[cluster]'") from None
    return distributed


def run(job: Callable, args: Sequence[tuple], scheduler: str, *, label: str = "replay",
        progress: Callable[[int, int], None] | None = None, retries: int = RETRIES) -> list:
    """job(*a) for every a in args as one task each on the scheduler; results in the order of args."""
    check(scheduler)
    dd = _distributed()
    with ExitStack() as stack:
        m = _LOCAL.match(scheduler)
        if m is not None:
            cluster = stack.enter_context(dd.LocalCluster(
                n_workers=int(m.group(1)), threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None, silence_logs=40))
            client = stack.enter_context(dd.Client(cluster))
        else:
            try:
                client = stack.enter_context(dd.Client(scheduler, timeout="20s"))
            except (OSError, TimeoutError) as e:
                raise ClusterError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
        run_id = uuid.uuid4().hex[:12]  # keys are global on a shared scheduler: never another run's result
        futures = [client.submit(job, *a, key=f"{label}-{run_id}-{i}", retries=retries, pure=False)
                   for i, a in enumerate(args)]
        index = {f.key: i for i, f in enumerate(futures)}
        out: list = [None] * len(futures)
        done = 0
        for fut in dd.as_completed(futures):
            out[index[fut.key]] = fut.result()  # raises the task's error once its retries are spent
            done += 1
            if progress:
                progress(done, len(futures))
        return out
