"""The built wheel carries every file the package reads at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _project_files() -> list[str]:
    """Tracked and new (not ignored) files: what a clean clone or an sdist holds."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    return [name for name in out.splitlines() if (ROOT / name).is_file()]


@pytest.mark.slow
def test_the_wheel_holds_every_data_file_of_the_package(tmp_path: Path) -> None:
    # Build from a pristine copy: a work tree's build/ and *.egg-info left by an
    # editable install would hide a missing package-data entry.
    source = tmp_path / "src"
    files = _project_files()
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(source)], check=True, cwd=tmp_path)
    [wheel] = tmp_path.glob("jobtable-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {name for name in files if name.startswith("jobtable/")}
    missing = sorted(wanted - names)
    assert not missing, f"files of the package missing from the wheel: {missing}"
