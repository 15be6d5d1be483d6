"""Alert-policy what-if on the sequence bench: the same evidence, other policy keys.

Every site the alert policy follows (candidates included) is measured on every new pair that
covers it, whatever the policy decides, so a variant's stored observations
(``site_observations``) are the evidence any confirmation rule would have seen. This script
re-applies :func:`~groundbreak.infer.nightly.alert_policy.next_status` with other ``alerts:``
keys to a variant that ``bench/sequence_bench.py`` ran, and prints the bench's figures for each,
in seconds instead of a run of nights. With the variant's own keys it gives back the run's
figures; pairing keys cannot be replayed (they change the pairs). ``--margin-m`` measures the
share hidden around each site again, on each observation's published pair mask, with another
``confirm_margin_m`` (the run's own shares otherwise).

Usage::

    python bench/sequence_bench.py --variants default          # once: the nights and the state
    python bench/policy_replay.py --variant default --policy '{}' \
        --policy '{confirm_score: 0.9}' --policy '{confirm_detections: 1}'
    python bench/policy_replay.py --variant default --margin-m 600
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import yaml
from scipy import ndimage
from shapely import wkt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sequence_bench as bench  # noqa: E402  (the bench's scenes, outlines and figures)

from groundbreak.infer.nightly.alert_policy import (  # noqa: E402
    AlertPolicy,
    Observation,
    SiteStatus,
    next_status,
)
from groundbreak.infer.nightly.site_clouds import hidden_near  # noqa: E402
from groundbreak.infer.prediction.raster_io import MASK_FILE  # noqa: E402
from groundbreak.infer.sites.sites import WGS84, to_crs  # noqa: E402

OPEN_EVENTS = ("new", "ongoing", "realerted")


def remeasured(db: sqlite3.Connection, margin_m: float) -> dict[int, float | None]:
    """Each observation's hidden share (by row id) measured again with ``margin_m`` on its pair's
    published mask and the site's outline in that pair."""
    rows = db.execute(
        "SELECT o.id, p.outputs, s.details FROM site_observations o "
        "JOIN pairs p ON p.id = o.pair_row "
        "JOIN site_scores s ON s.pair_row = o.pair_row AND s.site_id = o.site_id"
    ).fetchall()
    by_pair: dict[str, list[tuple[int, str | None]]] = {}
    for row in rows:
        text = json.loads(row["details"] or "{}").get("geometry")
        by_pair.setdefault(row["outputs"], []).append((row["id"], text))
    shares: dict[int, float | None] = {}
    for outputs, sites in by_pair.items():
        mask = Path(outputs) / MASK_FILE
        with rasterio.open(mask) as src:
            crs = src.crs
        outlines = [to_crs(wkt.loads(t), WGS84, crs) if t and crs else None for _, t in sites]
        shares.update(zip((i for i, _ in sites), hidden_near(mask, outlines, margin_m),
                          strict=True))
    return shares


def replayed_alerts(
    state_db: Path, policy: AlertPolicy, margin_m: float | None = None
) -> list[bench.AlertRecord]:
    """Each site's alert as ``policy`` would have kept it, with the outline of every night it
    was open (no analyst decisions: the bench makes none); with ``margin_m``, the hidden shares
    measured again (:func:`remeasured`)."""
    uri = f"file:{state_db.resolve()}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM site_observations "
                          "ORDER BY COALESCE(acquired, ''), id").fetchall()
        outlines: dict[tuple[str, str], str] = {}
        for row in db.execute("SELECT run_id, site_id, details FROM night_site_scores "
                              "ORDER BY score"):  # the night's best row wins
            text = json.loads(row["details"] or "{}").get("geometry")
            if text:
                outlines[(row["run_id"], row["site_id"])] = text
        hidden = remeasured(db, margin_m) if margin_m is not None else {}
    by_site: dict[str, list[sqlite3.Row]] = {}
    for row in rows:
        by_site.setdefault(row["site_id"], []).append(row)
    alerts = []
    for site_id, observations in by_site.items():
        current, history, status = SiteStatus(), [], None
        record = bench.AlertRecord(site_id, "", None)
        for row in observations:
            observation = Observation(row["pair_id"], row["acquired"], row["kind"], row["score"],
                                      row["changed_area_m2"], row["reference"],
                                      hidden.get(row["id"], row["hidden_near"]))
            step = next_status(policy, current, history, observation)
            history.append(observation)
            current, status = SiteStatus(step.status), step.status
            text = outlines.get((row["run_id"], site_id))
            if step.event in OPEN_EVENTS and text:
                record.open_nights.append(bench.OpenNight(row["run_id"], row["pair_id"],
                                                          wkt.loads(text)))
        record.status = status or ""
        record.geometry = record.open_nights[-1].geometry if record.open_nights else None
        alerts.append(record)
    return alerts


def figures(sequences: list[bench.CitySequence], alerts: list[bench.AlertRecord],
            start: date) -> dict[str, Any]:
    """The sequence bench's figures for replayed alerts, summed over cities."""
    cloudy_nights = {d for d, c in zip(sequences[0].dates, sequences[0].cloudy, strict=True)
                     if c}
    out: dict[str, Any] = {"construction_cells": 0, "construction_alerted": 0,
                           "no_change_cells": 0, "no_change_alerted": 0, "no_change_ever": 0,
                           "pushed": 0, "pushed_touching_no_construction": 0,
                           "first_raised_on_cloudy_night": 0, "first_raised_by_a_cloud": 0}
    delays: list[int] = []
    for seq in sequences:
        mine = bench.alerts_of_ground(alerts, seq)
        open_now = [a.geometry for a in mine
                    if a.status in bench.OPEN_STATUSES and a.geometry is not None]
        for key, value in bench.cell_figures(seq, open_now).items():
            out[key] += value
        pushed = [a for a in mine if a.open_nights]
        out["pushed"] += len(pushed)
        out["pushed_touching_no_construction"] += sum(
            bench.cell_figures(seq, [n.geometry for n in a.open_nights])["construction_alerted"]
            == 0 for a in pushed)
        out["no_change_ever"] += bench.cell_figures(
            seq, [n.geometry for a in pushed for n in a.open_nights])["no_change_alerted"]
        near = {day: ndimage.binary_dilation(mask, iterations=bench.CLOUD_MARGIN_PX)
                for day, mask in seq.pasted.items()}
        cloudy = [a for a in pushed if a.raised_on in cloudy_nights]
        out["first_raised_on_cloudy_night"] += len(cloudy)
        out["first_raised_by_a_cloud"] += sum(
            bool((bench.pixels_of(a.open_nights[0].geometry, seq.grid)
                  & near[a.raised_on]).any()) for a in cloudy)
        delays += bench.delays(seq, mine, start)[0]
    out["median_delay_days"] = float(np.median(delays)) if delays else None
    out["regions_alerted"] = len(delays)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="default", help="a variant the bench ran")
    parser.add_argument("--policy", action="append", default=[], metavar="YAML",
                        help="alerts keys to replay with (repeat); '{}' = the defaults")
    parser.add_argument("--margin-m", type=float, default=None,
                        help="measure the hidden share around each site again with this margin")
    parser.add_argument("--workdir", type=Path, default=bench.ROOT / "runs" / "sequence_bench")
    args = parser.parse_args(argv)
    meta_path = args.workdir / "sequence.json"
    state_db = args.workdir / "variants" / args.variant / "state" / "state.sqlite"
    if not meta_path.is_file() or not state_db.is_file():
        sys.exit(f"no sequence bench run in {args.workdir} for variant {args.variant!r}: run "
                 "bench/sequence_bench.py first")
    meta = json.loads(meta_path.read_text())
    sequences = [bench.load_city(args.workdir, city) for city in meta["cities"]]
    start = date.fromisoformat(meta["params"]["start"])
    every = meta["params"]["every"]
    for text in args.policy or ["{}"]:
        keys = yaml.safe_load(text) or {}
        if not isinstance(keys, dict) or "confirm_margin_m" in keys:
            sys.exit(f"--policy {text!r}: expected alerts keys other than confirm_margin_m "
                     "(give it as --margin-m)")
        fig = figures(sequences, replayed_alerts(state_db, AlertPolicy(**keys), args.margin_m),
                      start)
        delay = fig["median_delay_days"]
        margin = "" if args.margin_m is None else f" margin {args.margin_m:.0f} m"
        print(f"{json.dumps(keys)}{margin}: construction cells at the end "
              f"{fig['construction_alerted']}/"
              f"{fig['construction_cells']}, no-change {fig['no_change_alerted']}/"
              f"{fig['no_change_cells']} (on any night {fig['no_change_ever']}); alerts pushed "
              f"{fig['pushed']} ({fig['pushed_touching_no_construction']} touching no "
              f"construction cell); first raised by a cloud {fig['first_raised_by_a_cloud']} "
              f"(on a cloudy night {fig['first_raised_on_cloudy_night']}); median delay "
              + (f"{delay:.0f} d ({delay / every:.2f} acquisitions) over "
                 f"{fig['regions_alerted']} regions" if delay is not None else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
