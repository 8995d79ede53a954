"""A non-editable install works: the wheel carries every package, schemas/ included, and both commands."""
import subprocess
import sys
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
