"""Replay on a Dask cluster (replay.cluster): a real LocalCluster of worker processes, byte-identical to --jobs 1."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cloudpickle
import pyarrow.parquet as pq
import pytest

from recorder.store.writer import write_options
from replay import cluster, outputs, source
from replay_util import T0, events_table, synth_l3
from schemas import TABLES

EX, PAIR = "sim", "BTC_USD"
HOUR = source.HOUR_NS
H0 = T0 - T0 % HOUR
REPLAY = [sys.executable, "-c", "from replay.cli import main; main()"]


def dataset(root: Path, hours: int = 4) -> None:
    s = synth_l3(8_000 * hours, seed=2, hours=hours)
    part = source.partition_dir(root, "book_events", EX, PAIR, source.date_of(T0))
    part.mkdir(parents=True)
    pq.write_table(events_table(s), part / "h14-a-1.parquet", **write_options(TABLES["book_events"]))


def outputs_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for t in ("bbo", "depth") for p in sorted((root / t).rglob("*.parquet"))}


def replay(*args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run([*REPLAY, *args, "--exchange", EX, "--pair", PAIR], capture_output=True, text=True,
                          timeout=240, check=check)


@pytest.mark.timeout(300)
def test_local_cluster_of_two_workers_writes_what_jobs_1_writes(tmp_path):
    serial, dask = tmp_path / "serial", tmp_path / "dask"
    for r in (serial, dask):
        dataset(r)
    for cmd in (["bbo"], ["depth", "--levels", "5", "--every", "250ms"]):
        replay(*cmd, "--root", str(serial), "--jobs", "1")
        out = replay(*cmd, "--root", str(dask), "--scheduler", "local:2", "--progress")
        assert "4/4 hours" in out.stderr  # progress, drawn as the tasks finish
        assert sum(" l3 events=" in line for line in out.stdout.splitlines()) == 4  # a line per hour
    got, want = outputs_of(dask), outputs_of(serial)
    assert len(want) == 8 and got == want


def _flaky(marks: str, job, *args):
    """Fails the first time it runs for an hour (a marker file remembers), then does the real job."""
    mark = Path(marks) / str(args[3])
    if not mark.exists():
        mark.touch()
        raise OSError("injected failure on the first attempt")
    return job(*args)


@pytest.mark.timeout(300)
def test_failed_hours_are_retried_on_the_cluster(tmp_path):
    dataset(tmp_path / "d", hours=3)
    (tmp_path / "marks").mkdir()
    hours = source.hours(tmp_path / "d", "book_events", EX, PAIR, 0, 2**62)
    args = [(str(tmp_path / "marks"), outputs.hour_job, str(tmp_path / "d"), EX, PAIR, h, "l3", True, None, False,
             True) for h in hours]
    seen = []
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    try:
        res = cluster.run(_flaky, args, "local:2", progress=lambda d, n: seen.append((d, n)))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert [r.hour for r in res] == hours and len(hours) == 3
    assert sorted(p.name for p in (tmp_path / "marks").iterdir()) == sorted(str(h) for h in hours)
    assert seen[-1] == (3, 3)
    (tmp_path / "marks2").mkdir()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with pytest.raises(OSError, match="injected"):  # no retries left: the task's own error comes back
            cluster.run(_flaky, [(str(tmp_path / "marks2"), *args[0][1:])], "local:1", retries=0)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_distributed_is_imported_only_for_a_scheduler(tmp_path):
    dataset(tmp_path, hours=1)
    code = ("import sys\nfrom replay.cli import main\nsys.argv = ['replay', 'bbo', '--root', sys.argv[1], "
            f"'--exchange', '{EX}', '--pair', '{PAIR}']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nassert 'distributed' not in sys.modules, 'imported'\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("ok"), out.stderr
    # without the extra: one line that says what to install
    code = ("import sys\nsys.modules['distributed'] = None\nfrom replay.cli import main\n"
            "sys.argv = ['replay', 'bbo', '--root', sys.argv[1], "
            f"'--exchange', '{EX}', '--pair', '{PAIR}', '--scheduler', 'local:2']\nmain()")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "pip install 'booktape[cluster]'" in out.stderr, out.stderr
    bad = replay("bbo", "--root", str(tmp_path), "--scheduler", "local:0", check=False)
    assert bad.returncode == 2 and "N >= 1" in bad.stderr
    both = replay("bbo", "--root", str(tmp_path), "--scheduler", "local:2", "--jobs", "2", check=False)
    assert both.returncode == 2 and "exclude each other" in both.stderr
