"""A non-editable install works: the wheel carries every package, schemas/ included, and both commands."""
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_packages_and_schemas(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(REPO)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("booktape-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in [p for p in REPO.glob("*/**/__init__.py") if p.parts[len(REPO.parts)] in ("booktape", "recorder", "replay", "schemas")]:
        assert str(package.relative_to(REPO)) in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "recorder = recorder.cli:main" in entry_points and "replay = replay.cli:main" in entry_points

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    out = subprocess.run(
        [sys.executable, "-c", "import booktape, schemas, replay, recorder; print(booktape.Dataset.__name__, "
                               "schemas.__file__, len(schemas.TABLES))"],
        check=True, capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    ).stdout
    assert out.startswith("Dataset ") and str(site) in out and out.strip().endswith(" 8")


def test_a_plain_pip_install_records_data_compiling_the_kernels_at_first_use(tmp_path):
    """`pip install .` (not editable) into a fresh venv, then `recorder demo`: it says it compiles the kernels,
    into the cache NUMBA_CACHE_DIR names, records every venue (a demo that recorded nothing exits non-zero), and
    the next load comes from that cache. The fresh venv borrows this venv's dependencies through a path
    entry (no download); booktape itself is the wheel pip built and installed there."""
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    fresh_site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     check=True, capture_output=True, text=True).stdout.strip())
    (fresh_site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    str(REPO)], check=True, cwd=tmp_path)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import recorder; print(recorder.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert where.startswith(str(fresh_site)), where  # the installed copy, not this checkout
    cache = tmp_path / "kernel-cache"
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "NUMBA_CACHE_DIR": str(cache)}
    p = subprocess.run([str(venv / "bin" / "recorder"), "demo", "--seconds", "5", "--root", str(tmp_path / "d"),
                        "--pairs", "BTC_USD"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    assert "compiling the L3 kernels" in out and str(cache) in out
    assert any(cache.rglob("*.nbi"))
    # the next start loads them from that cache: what `recorder run` runs first, in well under a compile's time
    t0 = time.monotonic()
    subprocess.run([str(venv / "bin" / "python"), "-c", "from recorder.feeds import l3; l3.warm()"], check=True,
                   env=env, cwd=tmp_path, timeout=120)
    assert time.monotonic() - t0 < 10
    for venue in ("btcalpha", "bitexbit", "bitopro", "bitbay"):
        assert venue in out.split("rows per table and venue")[1]


def test_the_systemd_unit_is_hardened_to_a_security_score_of_at_most_3():
    import re
    import shutil

    import pytest

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    unit = (REPO / "docs" / "booktape-recorder.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "PrivateDevices=true", "RestrictAddressFamilies=",
                 "SystemCallFilter=@system-service", "NoNewPrivileges=true", "StateDirectory=booktape",
                 "Environment=NUMBA_CACHE_DIR="):
        assert line in unit, line
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                          str(REPO / "docs" / "booktape-recorder.service")], capture_output=True, text=True).stdout
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
    assert score <= 3.0, out[-2000:]
