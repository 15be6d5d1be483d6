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

It also sets ``THP_MEM_ALLOC_ENABLE=1`` unless the environment sets it: torch then asks the
kernel for transparent huge pages for each CPU tensor of 2 MB or more (``madvise``; torch reads
the variable at its first allocation). The night has glibc map every allocation of 16 MB or
more on its own and unmap it when freed, and with that threshold fixed glibc also gives back a
heap's free top above 128 kB (:mod:`groundbreak.datasets.scenes.strips`), so each window's
activations were faulted in again 4 kB at a time: a 4096^2 ``.SAFE`` ``predict`` took 8.5
million page faults and 28 s of system time, 1.6 million and 14 s with huge pages, for about
50 MB more at its peak (``bench/README.md``, "Huge pages by default").
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

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
