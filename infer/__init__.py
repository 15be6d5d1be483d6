"""Inference: bundles, tiled prediction, sites, ranking, reports, the nightly batch."""
