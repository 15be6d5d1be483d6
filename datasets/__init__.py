"""Data layer of groundbreak: scenes, tile pairs, labels, chips, manifests and the DataModule.

The names here are the surface most users need: open a scene (:func:`open_scene`, any kind, see
:mod:`.scene`), pair two of them on one grid (:class:`TilePair`), convert radiometry
(:class:`Radiometry`), and the one error every reader raises (:class:`InputError`). Chips,
labels, layouts and the DataModule are imported from their modules (:mod:`.chips`,
:mod:`.labels`, :mod:`.layouts`, :mod:`.datamodule`), so importing this package stays light
(no torch).
"""

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.grid import Grid
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.radiometry import Radiometry
from groundbreak.datasets.scene import Scene, open_scene

__all__ = ["Grid", "InputError", "Radiometry", "Scene", "TilePair", "open_scene"]
