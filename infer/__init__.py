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
"""

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
