"""What a night did: one record per pair and the night's summary (``summary.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundbreak.infer.exit_codes import EXIT_OK, EXIT_PAIRS_FAILED
from groundbreak.infer.nightly.state import AlertOutcome


@dataclass
class PairRecord:
    """What the night did with one pair."""

    pair_id: str
    status: str
    """``scored`` (predicted now), ``reused`` (done before), ``skipped`` (too cloudy to judge:
    predicted, no sites) or ``failed``."""
    seconds: float
    reason: str | None = None
    outputs: str | None = None
    clouds: dict[str, float] | None = None
    """Share of the pair hidden by clouds or shadows: ``before``, ``after``, ``either``."""
    warnings: tuple[str, ...] = ()
    """Warnings raised while the pair was read, predicted and scored (one line each)."""


@dataclass
class NightSummary:
    """The outcome of a night, as written to ``summary.json``."""

    run_id: str
    attempt: int
    run_dir: Path
    started_at: str
    model: str
    model_hash: str
    source: dict[str, str]
    pairs: list[PairRecord] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    baselines: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    alerts: AlertOutcome = field(default_factory=AlertOutcome)
    new_alerts: list[dict[str, Any]] = field(default_factory=list)
    sites: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    finished_at: str | None = None

    @property
    def failures(self) -> list[dict[str, str]]:
        """Failed pairs and unusable source entries, with their reasons."""
        failed = [{"pair_id": p.pair_id, "reason": p.reason or ""} for p in self.pairs
                  if p.status == "failed"]
        return failed + [{"pair_id": entry, "reason": reason} for entry, reason in self.problems]

    @property
    def exit_code(self) -> int:
        """0 when everything went through, 1 when any pair or source entry failed."""
        return EXIT_PAIRS_FAILED if self.failures else EXIT_OK

    def counts(self) -> dict[str, int]:
        """How many pairs were scored, reused, failed; baselines, sites, alerts."""
        status = [p.status for p in self.pairs]
        return {
            "pairs": len(self.pairs),
            "scored": status.count("scored"),
            "reused": status.count("reused"),
            "failed": status.count("failed"),
            "skipped_cloudy": status.count("skipped"),
            "source_problems": len(self.problems),
            "baselines": len(self.baselines),
            "ignored_entries": len(self.ignored),
            "sites": self.sites,
            "new_alerts": len(self.alerts.new) + len(self.alerts.realerted),
            "ongoing_alerts": len(self.alerts.ongoing),
            "suppressed_alerts": len(self.alerts.suppressed),
            "candidates": len(self.alerts.candidates),
            "cleared_alerts": len(self.alerts.cleared),
            "warnings": sum(len(p.warnings) for p in self.pairs),
        }

    def to_dict(self) -> dict[str, Any]:
        """The ``summary.json`` document."""
        return {
            "run_id": self.run_id,
            "attempt": self.attempt,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "exit_code": self.exit_code,
            "model": self.model,
            "model_hash": self.model_hash,
            "source": self.source,
            "counts": self.counts(),
            "timings": self.timings,
            "failures": self.failures,
            "warnings": [{"pair_id": p.pair_id, "warning": w}
                         for p in self.pairs for w in p.warnings],
            "new_alerts": self.new_alerts,
            "baselines": self.baselines,
            "ignored_entries": self.ignored,
            "pairs": [
                {"pair_id": p.pair_id, "status": p.status, "seconds": round(p.seconds, 3),
                 "reason": p.reason, "outputs": p.outputs, "clouds": p.clouds,
                 "warnings": list(p.warnings)}
                for p in self.pairs
            ],
        }
