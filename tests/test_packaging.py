"""The install: PEP 639 licence metadata, every package, the demo's data and the HTML templates in
the wheel, and a build without setuptools warnings."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"datasets": "groundbreak/datasets", "train": "groundbreak/train",
                "infer": "groundbreak/infer"}


def test_license_is_an_spdx_string_with_its_file_and_setuptools_reads_it() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = config["project"]
    assert project["license"] == "MIT"  # PEP 639; a {text = ...} table is deprecated
    assert project["license-files"] == ["LICENSE"]
    assert "MIT License" in (REPO / "LICENSE").read_text()
    floor = [r for r in config["build-system"]["requires"] if r.startswith("setuptools")]
    assert floor and re.fullmatch(r"setuptools>=(\d+)", floor[0])
    assert int(floor[0].split(">=")[1]) >= 77  # the first setuptools with PEP 639


@pytest.mark.slow
def test_wheel_holds_every_package_the_demo_data_and_templates_and_builds_without_warnings(
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in PACKAGE_DIRS:
        shutil.copytree(REPO / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    added = source / "infer" / "added_later"  # a subpackage nobody listed
    added.mkdir()
    (added / "__init__.py").write_text('"""A new subpackage."""\n')

    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    output = build.stdout + build.stderr
    assert not re.findall(r".*(?:warn|deprecat).*", output, flags=re.I), output

    (wheel,) = (tmp_path / "dist").glob("groundbreak-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith("/METADATA"))
    for folder, package in PACKAGE_DIRS.items():
        for module in (source / folder).rglob("*.py"):
            assert f"{package}/{module.relative_to(source / folder).as_posix()}" in names
    for data in (source / "infer" / "demo_data").iterdir():
        assert f"groundbreak/infer/demo_data/{data.name}" in names
    for room in ("report", "review"):  # the HTML templates are package data
        templates = sorted((source / "infer" / room / "templates").iterdir())
        assert templates
        for data in templates:
            assert f"groundbreak/infer/{room}/templates/{data.name}" in names
    assert "License-Expression: MIT" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
