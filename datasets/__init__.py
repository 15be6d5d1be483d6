"""Data layer of groundbreak: scenes, tile pairs, labels, chips, manifests and the DataModule."""

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.grid import Grid
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.scene import Scene, open_scene

__all__ = ["Grid", "InputError", "Scene", "TilePair", "open_scene"]
