"""How much of a predicted pair holds a prediction, and when that is too little to trust.

A pair whose inputs are all NaN, infinite, nodata, or do not overlap, gives a probability raster
that is (almost) all nodata: without this check it would read as "no change".
:func:`too_little_valid_data` says why instead; ``rank`` and ``nightly`` record such a pair as
failed with that reason, and ``predict`` warns. A pair hidden mostly by clouds is not broken
input but a cloudy acquisition: it is not failed here (the nightly batch skips it as cloudy, and
its watch-list sites are reported as not observed).
"""

from __future__ import annotations

from typing import Protocol

MIN_VALID_FRACTION = 0.01
"""Least share of a pair's grid that must hold a prediction (valid on both dates)."""


class Coverage(Protocol):
    """What a prediction result says about its coverage (``PredictionResult`` has both)."""

    valid_fraction: float
    unobserved_fraction: float


def too_little_valid_data(result: Coverage, minimum: float = MIN_VALID_FRACTION) -> str | None:
    """The reason a prediction covers too little of its pair to be trusted, or None when it is fine.

    Args:
        result: A prediction result (valid and cloud-hidden shares of the grid).
        minimum: Least share of the grid that must hold a prediction.
    """
    valid = float(result.valid_fraction)
    if valid >= minimum:
        return None
    hidden = min(max(float(result.unobserved_fraction), 0.0), 1.0 - valid)
    invalid = max(0.0, 1.0 - valid - hidden)
    if hidden >= invalid:  # clouds, not broken input: a cloudy pair (see the module docstring)
        return None
    causes = []
    if invalid > 0:
        causes.append(f"{invalid:.1%} has no valid input on both dates (nodata, NaN or infinite "
                      "values, or outside a scene)")
    if hidden > 0:
        causes.append(f"{hidden:.1%} is hidden by clouds or shadow")
    return (
        f"too little valid data: only {valid:.2%} of the pair has a prediction (at least "
        f"{minimum:.0%} is needed); " + "; ".join(causes)
    )
