"""The nightly commands keep pyarrow (41-66 MB resident) out of their process while they run, and
write the same files without it; the commands that read parquet keep it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from groundbreak.infer.cli.demo import DEMO_PAIRS, DEMO_SITES

OUTPUTS = ("alerts.csv", "sites.csv", "alerts.geojson", "changes.geojson", "report.html")


def night_in_fresh_process(state: Path, bundle: Path, import_pyarrow_first: bool) -> str:
    """``groundbreak nightly`` over the demo pairs through the dispatcher in a new interpreter;
    what it prints last: its exit code, whether pyarrow was imported by then, and whether the
    program could write a parquet file after the night."""
    config = state.parent / f"{state.name}.yaml"
    config.write_text("alerts:\n  confirm_score: 0.0\n")  # every site alerts: full tables
    argv = ["nightly", "--config", str(config), "--state", str(state), "--model", str(bundle),
            "--pairs", str(DEMO_PAIRS), "--sites", str(DEMO_SITES), "--alert-threshold", "0",
            "--run-id", "2024-05-01", "--device", "cpu", "--log-format", "json"]
    code = ("import sys\n" + ("import pyarrow\n" if import_pyarrow_first else "")
            + "from groundbreak.infer.cli import main\n"
            f"code = main({argv!r})\n"
            "imported = 'pyarrow' in sys.modules\n"
            "import pandas\n"
            f"pandas.DataFrame({{'a': [1]}}).to_parquet({str(state.parent / 'a.parquet')!r})\n"
            "print(code, imported, len(pandas.read_parquet("
            f"{str(state.parent / 'a.parquet')!r})))\n")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=600, check=False)
    assert child.returncode == 0, child.stderr
    return child.stdout.split("\n")[-2]


def test_a_night_keeps_pyarrow_out_and_writes_the_same_files(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    assert night_in_fresh_process(tmp_path / "with", tiny_bundle, True) == "0 True 1"
    # kept out while the night ran, and let in again after it
    assert night_in_fresh_process(tmp_path / "without", tiny_bundle, False) == "0 False 1"
    for name in OUTPUTS:
        with_pyarrow, without = (
            re.sub(rb"generated [-0-9: ]+ UTC", b"", (tmp_path / run / "runs" / "2024-05-01" /
                                                      name).read_bytes())  # the report's clock
            for run in ("with", "without")
        )
        assert len(with_pyarrow) > 200, name  # rows, not only a header
        assert without == with_pyarrow, name


def test_the_chips_command_keeps_pyarrow_for_its_parquet_manifest() -> None:
    code = ("import sys\nfrom groundbreak.infer.cli import main\nmain(['chips', '--help'])\n"
            "print(sys.modules.get('pyarrow', 'absent') is not None)\n")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=600, check=False)
    assert child.stdout.split()[-1] == "True", child.stderr  # absent or imported, not blocked
