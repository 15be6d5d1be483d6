"""Inference: bundles run over tile pairs, sites, reports, the nightly batch and the commands.

One subpackage per job, each importing only the ones listed before it:

- :mod:`.prediction`: the tiled predictor, its runtimes and its rasters;
- :mod:`.report`: the analyst's offline HTML report;
- :mod:`.sites`: sites measured, scored and ranked, alert rows;
- :mod:`.nightly`: the nightly batch over a watch-list and its state;
- :mod:`.review`: the review web app over the nightly state;
- :mod:`.evaluation`: bundles scored on labelled data, cross-validation;
- :mod:`.cli`: the ``groundbreak`` command and the inference subcommands.

The two modules at this level are shared by all of them and import none of them:
:mod:`.atomic` (writes never seen half done) and :mod:`.exit_codes`. ``demo_data/`` holds the
tile pairs of ``groundbreak demo``.

Importing this package sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it,
so that torch's OpenMP threads sleep instead of spinning when they wait (it has effect only
when this package is imported before torch, as the ``groundbreak`` command does). With the
default spinning, the model's threads and the predictor's prefetch thread fight for the cores:
a 2048^2 COG pair took 99-113 s on the 2-core machine under load, 30 s with passive waits
(``bench/README.md``, "OpenMP waits").
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = [
    "atomic",
    "cli",
    "evaluation",
    "exit_codes",
    "nightly",
    "prediction",
    "report",
    "review",
    "sites",
]
