"""The wheel ships every module of cnnc and the grammar.

An editable install reads the checkout, so a package left out of the wheel shows only
after `pip install cnnc-*.whl` (as `ModuleNotFoundError` on `cnnc.compile`). This test
builds the wheel and compares its file list with the files on disk; .ci/run also installs
the wheel into a fresh venv and runs an example from outside the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Build outputs and caches stay behind: a stale build/lib would put into the wheel files
# the package list leaves out, and hide the very mistake this test looks for.
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis",
    ".pytest_cache", ".ruff_cache", "out",
)


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> set[str]:
    work = tmp_path_factory.mktemp("wheel")
    tree = work / "tree"
    shutil.copytree(ROOT, tree, ignore=NOT_COPIED, symlinks=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-q", "-w", str(work / "dist"), str(tree)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"pip wheel failed:\n{done.stdout}\n{done.stderr}"
    (wheel,) = (work / "dist").glob("cnnc-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def _modules_on_disk() -> set[str]:
    return {
        "cnnc/" + path.relative_to(ROOT / "cnnc").as_posix()
        for path in (ROOT / "cnnc").rglob("*.py")
        if "__pycache__" not in path.parts
    }


def test_wheel_holds_every_package(wheel_files):
    packages = {name for name in _modules_on_disk() if name.endswith("/__init__.py")}
    assert "cnnc/codegen/templates/__init__.py" in packages  # the walk finds nested ones
    assert sorted(packages - wheel_files) == []


def test_wheel_holds_every_module(wheel_files):
    assert sorted(_modules_on_disk() - wheel_files) == []


def test_wheel_holds_the_grammar(wheel_files):
    grammar = {f"cnnc/grammar/{path.name}" for path in (ROOT / "grammar").glob("*.lark")}
    assert "cnnc/grammar/cnn.lark" in grammar
    assert sorted(grammar - wheel_files) == []


def test_wheel_ships_only_cnnc(wheel_files):
    """No tests, examples or bench scripts installed as top-level packages."""
    top = {name.split("/")[0] for name in wheel_files if not name.startswith("cnnc-")}
    assert top == {"cnnc"}
