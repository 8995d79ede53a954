"""s3:// dataset roots against a real S3-compatible server on loopback (moto's standalone server, started here)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from simfixtures import threaded_sim  # noqa: E402
from test_e2e_process import free_port, stop, toml  # noqa: E402
from test_multi_recorder import wait_fed  # noqa: E402

from recorder.demo import sim_doc  # noqa: E402
from recorder.sim.server import SimConfig  # noqa: E402
from schemas import storage  # noqa: E402

pytestmark = pytest.mark.faults  # recordings under injected faults: make faults (run by .ci/run)

BUCKET = "booktape-test"
ROOT = f"s3://{BUCKET}/data"
REPLAY = [sys.executable, "-c", "from replay.cli import main; main()"]
KEY_ID, SECRET = "AKIA-from-secrets-file-7f3a", "s3-secret-from-file-d41d8cd98f00b204"


@pytest.fixture(scope="module")
def s3():
    """moto_server on 127.0.0.1:<free port>; the AWS_* environment pointing at it (credentials are dummies)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="testing-key-id",
               AWS_SECRET_ACCESS_KEY="testing-secret-d41d8cd98f", AWS_DEFAULT_REGION="us-east-1")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "moto server did not start"
                time.sleep(0.1)
        fs = storage.filesystem()
        fs.mkdir(BUCKET)
        yield fs, env
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        proc.terminate()
        proc.wait(10)


def run(*args, check=True):
    out = subprocess.run([*REPLAY, *args], capture_output=True, text=True, timeout=300)
    assert not check or out.returncode == 0, out.stderr
    return out


def objects(fs, prefix: str = f"{BUCKET}/data") -> list[str]:
    return sorted(p for p in fs.find(prefix) if p.endswith(".parquet"))


@pytest.mark.timeout(300)
def test_recorder_ships_to_the_bucket_and_replay_reads_it(s3, tmp_path):
    fs, env = s3
    with threaded_sim(SimConfig(seed=21, pairs=["BTC_USD"], rate=10.0)) as ts:
        doc = sim_doc(ts.sim.urls, ROOT, ["BTC_USD"])
        doc["venues"] = {"btcalpha": doc["venues"]["btcalpha"]}
        doc["venues"]["btcalpha"]["grouped_interval"] = 1.0  # snapshots to verify once the book is joined
        port = free_port()
        doc["recorder"].update(spool=str(tmp_path / "spool"), writer="s3rec", metrics_port=port, seq_namespace=7,
                               secrets_file="secrets.toml")
        cfg = tmp_path / "rec.toml"
        cfg.write_text(toml(doc))
        # the recorder's bucket credentials come from its secrets file, not from the AWS_* environment
        (tmp_path / "secrets.toml").write_text(f'[s3]\naccess_key_id = "{KEY_ID}"\nsecret_access_key = "{SECRET}"\n')
        rec_env = {k: v for k, v in os.environ.items()
                   if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "ARROW_DEFAULT_MEMORY_POOL")}
        proc = subprocess.Popen([sys.executable, "-c", "from recorder.cli import main; main()", "run", "--config",
                                 str(cfg)], stdout=(tmp_path / "rec.log").open("ab"), stderr=subprocess.STDOUT,
                                env=rec_env)
        wait_fed(port, proc, ["btcalpha:book"])
        time.sleep(8)
        assert stop(proc)[0] == 0, (tmp_path / "rec.log").read_text()[-3000:]
    shipped = objects(fs)
    tables = {k.split("/")[2] for k in shipped}
    assert {"raw", "book_events", "book_levels", "sessions"} <= tables
    spool = tmp_path / "spool"
    assert not [p for p in spool.rglob("*.parquet") if "_log" not in p.parts]  # everything final was shipped
    assert (spool / "_log").is_dir()  # the durable log stays local
    log = (tmp_path / "rec.log").read_text()
    assert SECRET not in log and KEY_ID not in log
    assert not [p for p in spool.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    # replay reads the bucket; bbo's output lands in it
    out = run("bbo", "--root", ROOT, "--exchange", "btcalpha", "--pair", "BTC_USD")
    assert "rows=" in out.stdout
    assert any(k.split("/")[2] == "bbo" for k in objects(fs))
    ver = run("verify", "--root", ROOT, "--exchange", "btcalpha", "--pair", "BTC_USD")
    assert "checked=" in ver.stdout and "verify ok" in ver.stdout
    # replay sql over the bucket counts what a local copy of it counts
    local = tmp_path / "copy"
    fs.get(f"{BUCKET}/data/", str(local), recursive=True)
    q = ("SELECT (SELECT count(*) FROM raw), (SELECT count(*) FROM book_events), (SELECT count(*) FROM bbo), "
         "(SELECT count(*) FROM sessions)")
    lo, hi = run("sql", "--root", ROOT, "--format", "csv", "SELECT min(seq), max(seq) FROM raw").stdout.splitlines()[-1].split(",")
    assert 7 << 53 <= int(lo) <= int(hi) < 8 << 53  # this host's seq namespace
    remote_counts = run("sql", "--root", ROOT, "--format", "csv", q).stdout
    local_counts = run("sql", "--root", str(local), "--format", "csv", q).stdout
    assert remote_counts == local_counts and "0,0" not in remote_counts.splitlines()[-1]


SHIP = ("import sys\nfrom pathlib import Path\nfrom recorder.store.remote import ship\n"
        "print(ship(Path(sys.argv[1]), sys.argv[2], 'w'))")


@pytest.mark.timeout(300)
def test_kill_9_during_an_upload_leaves_no_partial_object_and_loses_nothing(s3, tmp_path):
    fs, _ = s3
    spool = tmp_path / "spool"
    part = spool / "raw" / "exchange=btcalpha" / "pair=BTC_USD" / "date=2026-01-05"
    part.mkdir(parents=True)
    big = part / "h07-w-c0123456789abcdef.parquet"  # a closed, compacted hour of writer w
    with open(big, "wb") as f:
        for _ in range(24):
            f.write(os.urandom(8 << 20))  # 192 MB: a multipart upload of several parts
    want = storage.sha256_file(big)
    key = storage.key(ROOT, big.relative_to(spool).as_posix())
    child = subprocess.Popen([sys.executable, "-c", SHIP, str(spool), ROOT], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not fs.list_multipart_uploads(BUCKET):  # the upload has begun: parts are going up
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    fs.invalidate_cache()
    assert not fs.exists(key)  # no partial object, ever
    assert storage.sha256_file(big) == want  # the local copy is whole
    out = subprocess.run([sys.executable, "-c", SHIP, str(spool), ROOT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert fs.info(key)["size"] == want[0] and storage.sha256_file(key, fs) == want
    assert not big.exists()


def test_prune_a_bucket_keeps_the_current_day(s3, tmp_path):
    fs, _ = s3
    import datetime as dt
    today = dt.datetime.now(dt.timezone.utc).date()
    keys = {}
    for ago in (0, 40):
        date = (today - dt.timedelta(days=ago)).isoformat()
        keys[ago] = storage.key(ROOT, f"trades/exchange=prunetest/pair=BTC_USD/date={date}/h01-w-c0.parquet")
        fs.pipe_file(keys[ago], b"PAR1")
    out = subprocess.run([sys.executable, "-c", "from recorder.cli import main; main()", "prune", "--root", ROOT,
                          "--older-than", "30d", "--table", "trades"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "1 partition(s) dropped" in out.stdout, out.stderr
    assert fs.exists(keys[0]) and not fs.exists(keys[40])


def test_bucket_config_needs_a_spool_a_namespace_and_keeps_credentials_secret(tmp_path):
    from recorder import config

    doc = {"recorder": {"root": ROOT, "spool": "spool", "seq_namespace": 2, "secrets_file": "s.toml"},
           "venues": {"btcalpha": {"pairs": ["BTC_USD"]}}}
    (tmp_path / "s.toml").write_text(f'[s3]\naccess_key_id = "{KEY_ID}"\nsecret_access_key = "{SECRET}"\n')
    cfg = config.parse(doc, base=tmp_path, env={})
    assert cfg.remote == ROOT and cfg.root == tmp_path / "spool" and cfg.seq_namespace == 2
    assert cfg.s3_credentials.secret.reveal() == SECRET and SECRET not in repr(cfg) and KEY_ID not in repr(cfg)
    for bad, msg in (({"spool": None}, "recorder.spool"), ({"seq_namespace": 0}, "seq_namespace")):
        rec = {k: v for k, v in {**doc["recorder"], **bad}.items() if v is not None}
        with pytest.raises(config.ConfigError, match=msg):
            config.parse({**doc, "recorder": rec}, base=tmp_path, env={})
    (tmp_path / "s.toml").write_text(f'[s3]\naccess_key_id = "{KEY_ID}"\n')
    with pytest.raises(config.ConfigError, match=r"\[s3\]: needs exactly") as e:
        config.parse(doc, base=tmp_path, env={})
    assert KEY_ID not in str(e.value)
