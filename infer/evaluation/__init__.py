"""Evaluation: a model bundle scored on labelled scenes or chips, and cross-validation by city.

Owns:

- :mod:`.evaluate`: ``groundbreak evaluate`` (a bundle on labelled chips, or on whole labelled
  scenes through the tiled predictor);
- :mod:`.scene_evaluate`: whole-scene scores (pooled pixel counts, region counts, histograms);
- :mod:`.crossval`: ``groundbreak cv`` (train on k-1 folds of cities, score the held-out ones);
  :mod:`.cv_pooling` pools its folds into the out-of-fold figures and :mod:`.cv_markdown` writes
  its ``cv.md``;
- :mod:`.ensemble_cv`: ``groundbreak cv-ensemble`` (ensembles of finished cv runs, scored and
  pooled the same way).

Why here, above prediction, and not in ``train``: scoring a bundle on whole scenes runs the same
:class:`~groundbreak.infer.prediction.predictor.TiledPredictor` that users run, so the figures
are those of the shipped inference. The predictor needs the bundle from ``train``; putting a
prediction core below ``train`` would move the predictor and its seven modules, while moving
evaluation up moves three modules that use both stages. So ``train`` trains and exports, and
this package, which uses both, sits on top of them.
"""

__all__ = ["crossval", "cv_markdown", "cv_pooling", "ensemble_cv", "evaluate", "scene_evaluate"]
