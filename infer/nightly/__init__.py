"""The nightly batch: score the newest tile pairs over a watch-list, resumably, with alert history.

Parts, one job each:

- :mod:`~groundbreak.infer.nightly.config`: the YAML config, every key documented and validated
  (:mod:`~groundbreak.infer.nightly.cluster_spec`: its ``cluster`` key);
- :mod:`~groundbreak.infer.nightly.sources`: pairs CSV, STAC ItemCollection or drop folder ->
  the night's :class:`~groundbreak.datasets.pair_spec.PairSpec` list
  (:mod:`~groundbreak.infer.nightly.pairing`: which acquisitions are compared;
  :mod:`~groundbreak.infer.nightly.remote`: which hosts bands may be read from);
- :mod:`~groundbreak.infer.nightly.state`: the SQLite state (runs, pairs, site scores, alerts),
  over :mod:`~groundbreak.infer.nightly.schema` and :mod:`~groundbreak.infer.nightly.alert_store`;
  :mod:`~groundbreak.infer.nightly.alert_policy`: the alert rules;
  :mod:`~groundbreak.infer.nightly.site_identity`: discovered sites from night to night;
  :mod:`~groundbreak.infer.nightly.evidence`, :mod:`~groundbreak.infer.nightly.timeline`,
  :mod:`~groundbreak.infer.nightly.revisits`: what the state keeps and shows of each site;
- :mod:`~groundbreak.infer.nightly.hashing`: content hashes of inputs and models, cached;
- :mod:`~groundbreak.infer.nightly.lock`: one run at a time per state directory;
- :mod:`~groundbreak.infer.nightly.logging`: a progress bar on a terminal, JSON lines otherwise;
- :mod:`~groundbreak.infer.nightly.runner`: the night itself, one
  :mod:`~groundbreak.infer.nightly.pair_scorer` per pair, recorded as
  :mod:`~groundbreak.infer.nightly.records`, written out by
  :mod:`~groundbreak.infer.nightly.outputs`;
- :mod:`~groundbreak.infer.nightly.cluster`: its pairs on Dask workers (key ``cluster``).

Writes that are never seen half done come from :mod:`groundbreak.infer.atomic`, which the run
tables and the report share. Its commands are :mod:`groundbreak.infer.cli.nightly` and
:mod:`groundbreak.infer.cli.alerts`.
"""

__all__ = [
    "alert_policy",
    "alert_store",
    "cluster",
    "cluster_spec",
    "config",
    "evidence",
    "hashing",
    "lock",
    "logging",
    "outputs",
    "pair_scorer",
    "pairing",
    "records",
    "remote",
    "revisits",
    "runner",
    "schema",
    "site_identity",
    "sources",
    "state",
    "timeline",
]
