"""CSV formula injection: text cells a spreadsheet would evaluate are written as text (OWASP)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import pytest

from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.nightly.alert_policy import AlertPolicy
from groundbreak.infer.nightly.state import NightlyState
from groundbreak.infer.sites.alerts_io import spreadsheet_safe, write_sites_csv

HOSTILE = ["=HYPERLINK(\"http://x\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def test_spreadsheet_safe_prefixes_formulas_only() -> None:
    for text in HOSTILE:
        assert spreadsheet_safe(text) == "'" + text
    assert spreadsheet_safe("Marina lot") == "Marina lot"
    assert spreadsheet_safe(-115.17) == -115.17  # numbers stay numbers
    assert spreadsheet_safe(None) is None


def test_sites_csv_neutralises_names_and_ids(tmp_path: Path) -> None:
    table = pd.DataFrame(
        [{"rank": i + 1, "site_id": text, "name": text, "pair_id": "p", "score": 0.5,
          "lon": -115.17, "lat": 36.1} for i, text in enumerate(HOSTILE)]
    )
    path = write_sites_csv(table, tmp_path / "sites.csv")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == ["'" + t for t in HOSTILE]
    assert [r["site_id"] for r in rows] == ["'" + t for t in HOSTILE]
    assert all(r["lon"] == "-115.17" for r in rows)


def test_alerts_list_csv_neutralises_names(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sites = [{"site_id": "@evil", "name": "=1+1", "pair_id": "p", "score": 0.9,
              "lon": -115.2, "lat": 36.1}]
    with NightlyState(tmp_path / "state") as state:
        state.update_alerts("2024-05-01", sites, AlertPolicy(confirm_detections=1))
    assert groundbreak(["alerts", "list", "--state", str(tmp_path / "state"),
                        "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert (rows[0]["site_id"], rows[0]["name"]) == ("'@evil", "'=1+1")
    assert float(rows[0]["lon"]) == pytest.approx(-115.2)
