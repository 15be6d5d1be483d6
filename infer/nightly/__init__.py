"""The nightly batch: score the newest tile pairs over a watch-list, resumably, with alert history.

Parts, one job each:

- :mod:`~groundbreak.infer.nightly.config`: the YAML config, every key documented and validated;
- :mod:`~groundbreak.infer.nightly.sources`: pairs CSV, STAC ItemCollection or drop folder ->
  the night's :class:`~groundbreak.datasets.pair_spec.PairSpec` list;
- :mod:`~groundbreak.infer.nightly.state`: the SQLite state (runs, pairs, site scores, alerts);
- :mod:`~groundbreak.infer.nightly.hashing`: content hashes of inputs and models, cached;
- :mod:`~groundbreak.infer.nightly.lock`: one run at a time per state directory;
- :mod:`~groundbreak.infer.nightly.logging`: a progress bar on a terminal, JSON lines otherwise;
- :mod:`~groundbreak.infer.nightly.runner`: the night itself;
- :mod:`~groundbreak.infer.nightly.cluster`: its pairs on Dask workers (key ``cluster``).

Writes that are never seen half done come from :mod:`groundbreak.infer.atomic`, which the run
tables and the report share.
"""
