"""The scenes a scored pair was read from, found again for its pictures, or said to be gone.

Each done pair stores which scenes it was read from (paths and content hashes, ``pairs.scenes``
in the state). The report's and the review's crops of an alert are made from those scenes, only
while their content is what the night scored: a scene rewritten, replaced or removed since is
reported as such, never silently replaced by whatever the source lists now.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.nightly.hashing import ContentHasher


def stored_pair_spec(pair: Mapping[str, Any], hasher: ContentHasher) -> PairSpec | str | None:
    """The pair a night scored, from its stored scenes (a ``pairs`` row); a one-line reason
    when a scene changed or is gone; None for a pair stored without its scenes (older state)."""
    try:
        scenes = json.loads(pair.get("scenes") or "null")
    except ValueError:
        scenes = None
    if not isinstance(scenes, dict) or not {"before", "after"} <= set(scenes):
        return None
    for which in ("before", "after"):
        scene = scenes[which]
        try:
            now = hasher.scene_digest(scene["path"])
        except InputError as err:
            return f"the {which} scene is gone ({err.problem})"
        if json.loads(json.dumps(now)) != scene["sha256"]:
            return f"the {which} scene changed since the night scored it ({scene['path']})"
    return PairSpec(
        str(pair["pair_id"]), Path(scenes["before"]["path"]), Path(scenes["after"]["path"]),
        before_date=scenes["before"].get("date"), after_date=scenes["after"].get("date"),
    )
