"""The report's table highlights only the run's alerts: a dismissed (suppressed) site that still
scores above the alert threshold is tagged, never shown as an alert (issue 12, item 10)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from groundbreak.infer.report.report import write_report
from groundbreak.infer.sites.ranking import RankResult


def site(rank: int, site_id: str, score: float) -> dict:
    return {"rank": rank, "site_id": site_id, "name": site_id.title(), "pair_id": "p1",
            "score": score, "changed_area_m2": 12_000.0, "confidence": score, "lat": 36.1,
            "lon": -115.2, "area_unit": "m2", "before_date": "2024-01-01",
            "after_date": "2024-06-01"}


def test_dismissed_sites_are_not_highlighted_as_alerts(tmp_path: Path) -> None:
    sites = pd.DataFrame([site(1, "quarry", 0.92), site(2, "new-lot", 0.81),
                          site(3, "quiet", 0.10)])
    alerts = sites[sites["site_id"] == "new-lot"].reset_index(drop=True)  # quarry is dismissed
    result = RankResult(out_dir=tmp_path, sites=sites, alerts=alerts, changes=pd.DataFrame(),
                        failures=pd.DataFrame(columns=["pair_id", "reason"]),
                        timings=pd.DataFrame())
    page = write_report(tmp_path / "report.html", result, pairs={},
                        settings={"alert threshold": 0.5}).read_text()
    rows = re.findall(r"<tr( class=\"is-alert\")?><td class=\"num\">\d+</td><td>([^<]+)(.*?)</tr>",
                      page)
    highlighted = {site_id for css, site_id, _ in rows if css}
    assert highlighted == {"new-lot"}
    tagged = {site_id for _, site_id, rest in rows if 'class="tag"' in rest}
    assert tagged == {"quarry"}
    assert '<div class="table-wrap"><table id="sites">' in page


def test_sites_hidden_by_clouds_are_shown_as_not_observed(tmp_path: Path) -> None:
    cloudy = dict(site(2, "under-cloud", 0.7), observed=False, valid_fraction=0.2)
    sites = pd.DataFrame([dict(site(1, "clear", 0.8), observed=True, valid_fraction=1.0), cloudy])
    alerts = sites[sites["site_id"] == "clear"].reset_index(drop=True)
    result = RankResult(out_dir=tmp_path, sites=sites, alerts=alerts, changes=pd.DataFrame(),
                        failures=pd.DataFrame(columns=["pair_id", "reason"]),
                        timings=pd.DataFrame())
    page = write_report(tmp_path / "report.html", result, pairs={},
                        settings={"alert threshold": 0.5}).read_text()
    row = re.search(r"<tr[^>]*><td class=\"num\">2</td>(.*?)</tr>", page).group(1)
    assert "not observed" in row and "seen on 20% of its pixels" in row
    assert 'class="is-alert"><td class="num">2<' not in page


def test_the_table_lists_the_best_ranked_sites_and_says_where_the_rest_are(
    tmp_path: Path,
) -> None:
    """A country night scores hundreds of thousands of sites: the page lists the best ranked
    (``max_rows``) and points to sites.csv for the rest, so that a browser can open it."""
    sites = pd.DataFrame([site(rank, f"s{rank}", 1.0 - rank / 10) for rank in range(1, 6)])
    alerts = sites[sites["rank"].isin([1, 4])].reset_index(drop=True)
    result = RankResult(out_dir=tmp_path, sites=sites, alerts=alerts, changes=pd.DataFrame(),
                        failures=pd.DataFrame(columns=["pair_id", "reason"]),
                        timings=pd.DataFrame())
    page = write_report(tmp_path / "report.html", result, pairs={}, max_cards=1, max_rows=2,
                        settings={"alert threshold": 0.5}).read_text()
    listed = re.findall(r"<tr[^>]*><td class=\"num\">(\d+)</td>", page)
    assert listed == ["1", "2"]
    assert "The 2 best-ranked scored sites" in page
    assert "3 more scored site(s), ranked below these, are in sites.csv." in page
    assert "1 more alert(s) are listed in alerts.csv" in page  # s4, beyond the table
    everything = write_report(tmp_path / "all.html", result, pairs={}, max_cards=1,
                              settings={"alert threshold": 0.5}).read_text()
    assert re.findall(r"<tr[^>]*><td class=\"num\">(\d+)</td>", everything) == list("12345")
    assert "All scored sites" in everything and "more scored site" not in everything
