"""``groundbreak rank``: non-finite area options are usage errors (exit 2), caught by argparse."""

from __future__ import annotations

from pathlib import Path

import pytest

from groundbreak.infer.rank_cli import main as rank


@pytest.mark.parametrize(
    ("option", "value"),
    [("--area-scale", "nan"), ("--area-scale", "inf"), ("--area-scale", "-inf"),
     ("--area-scale", "0"), ("--min-area", "inf"), ("--min-area", "nan"), ("--min-area", "-1")],
)
def test_non_finite_area_options_exit_2(
    option: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        rank(["--pairs", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "out"),
              f"{option}={value}"])
    assert exit_info.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
