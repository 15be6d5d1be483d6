"""Prediction: a model bundle run over a whole tile pair, written as georeferenced rasters.

Owns the tiled predictor and everything it is made of:

- :mod:`.predictor`: :class:`~.predictor.TiledPredictor`, a pair -> probability and mask rasters;
- :mod:`.tiling`: the overlapping windows over a pair's grid;
- :mod:`.blending`: the Hann-window weights that stitch overlapping windows without seams;
- :mod:`.raster_io`: reading and writing the probability and mask rasters (COG, atomic);
- :mod:`.inference`, :mod:`.onnx_model`: the runtimes a bundle runs on (PyTorch, ONNX Runtime);
- :mod:`.distributed`: one pair predicted on several processes or GPUs (Lightning);
- :mod:`.stage_clock`: where the time of a prediction went;
- :mod:`.coverage`: when a prediction holds too little valid data to trust.

It depends on ``datasets`` and ``train`` (the bundle), and on nothing else in ``infer`` but
:mod:`groundbreak.infer.atomic`.
"""

__all__ = [
    "blending",
    "coverage",
    "distributed",
    "inference",
    "onnx_model",
    "predictor",
    "raster_io",
    "stage_clock",
    "tiling",
]
