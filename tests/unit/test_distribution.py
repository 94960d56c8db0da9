"""The installed distribution has one import root, `tierflow`, and a public surface."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import tierflow

ROOT = Path(__file__).resolve().parents[2]
SUBPACKAGES = ("routing", "providers", "store", "tasks", "worker", "migrations")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    # Built from a copy (links kept as links), so that the build leaves nothing in the tree.
    source = tmp_path_factory.mktemp("source") / "tierflow"
    ignore = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", ".tierflow", "__pycache__")
    shutil.copytree(ROOT, source, symlinks=True, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            ".",
        ],
        cwd=source,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PIP_NO_INDEX": "1"},
    )
    (path,) = out.glob("tierflow-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_installs_tierflow_and_nothing_else_at_top_level(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"tierflow"}
    for sub in SUBPACKAGES:
        assert f"tierflow/{sub}/__init__.py" in wheel.namelist()
    assert "tierflow/py.typed" in wheel.namelist()
    assert "tierflow/migrations/script.py.mako" in wheel.namelist()


def test_the_console_script_points_into_the_package(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    assert "tierflow = tierflow.worker.cli:main" in wheel.read(entry_points).decode()


def test_every_public_name_resolves() -> None:
    assert tierflow.__all__ == sorted(tierflow.__all__)
    for name in tierflow.__all__:
        assert getattr(tierflow, name) is not None


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        tierflow.no_such_name  # noqa: B018
