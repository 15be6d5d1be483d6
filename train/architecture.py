"""Architecture records (``model.json["architecture"]``) without torch: the networks' names and
keys, the record of a model's hyperparameters, and the output stride a record implies.

:mod:`.model` builds the networks these records describe; this module only reads records, so a
command that runs a converted graph (``runtime: openvino`` with a kept graph) can check a bundle
without importing torch, timm or segmentation-models-pytorch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, get_args

Fusion = Literal["early", "siamese_diff", "siamese_concat"]
FUSIONS: tuple[str, ...] = get_args(Fusion)
Network = Literal["unet", "fc", "fc_res"]
NETWORKS: tuple[str, ...] = get_args(Network)
"""``unet``: :class:`~groundbreak.train.model.ChangeUNet`; ``fc``: FC-EF, FC-Siam-diff or
FC-Siam-conc by fusion (:class:`~groundbreak.train.fc_networks.FCNet`); ``fc_res``: FC-EF-Res
(:class:`~groundbreak.train.fc_networks.FCEFRes`)."""
UNET_KEYS = ("fusion", "encoder_name", "encoder_depth", "decoder_channels", "in_channels")
"""Architecture keys of a U-Net (``full_resolution`` is recorded only when on)."""
FC_KEYS = ("network", "fusion", "in_channels")
"""Architecture keys of the FC networks, whose layers are fixed."""
ENSEMBLE = "ensemble"
"""The ``network`` of a :class:`~groundbreak.train.ensemble_network.ChangeEnsemble` record (built
from bundles, never trained)."""
ENSEMBLE_KEYS = ("network", "members", "logit_offsets", "in_channels")
"""Architecture keys of an ensemble: its members' records and their logit offsets."""
MAX_MEMBERS = 8
"""The most members an ensemble holds (a bundle asking for more is refused)."""
FC_WIDTHS = (16, 32, 64, 128)
"""Channels of the four levels of :class:`~groundbreak.train.fc_networks.FCNet`."""
RES_WIDTHS = (8, 16, 32, 64, 128)
"""Channels of FC-EF-Res at full resolution, 1/2, 1/4, 1/8 and 1/16."""
FC_OUTPUT_STRIDE = 2 ** len(FC_WIDTHS)
"""The output stride of FC-EF, FC-Siam-diff and FC-Siam-conc: one pooling a level."""
RES_OUTPUT_STRIDE = 2 ** (len(RES_WIDTHS) - 1)
"""The output stride of FC-EF-Res: one pooling below each level but the first."""

_TIMM_UNIVERSAL_ALIASES = ("timm-regnet", "timm-res2", "timm-resnest", "timm-mobilenetv3",
                           "timm-gernet")
"""smp's deprecated ``timm-`` encoder names that it builds as ``tu-`` (timm universal) encoders."""


def public_encoder_name(name: str) -> str:
    """The public smp name of an encoder: deprecated ``timm-`` aliases become their ``tu-`` name.

    smp (>= 0.5) builds these aliases as the ``tu-`` encoder itself, so the weights are the same
    (``timm-regnetx_002`` is ``tu-regnetx_002``; ``timm-mobilenetv3_*`` is ``tu-tf_mobilenetv3_*``).
    Other names are returned unchanged.
    """
    if name.startswith(_TIMM_UNIVERSAL_ALIASES):
        name = "tu-" + name[len("timm-"):]
        if "mobilenetv3" in name:
            name = name.replace("tu-", "tu-tf_", 1)
    return name


def architecture_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture record (``model.json["architecture"]``) of the model that ``values``
    describe: task hyperparameters or a recorded architecture.

    A U-Net records :data:`UNET_KEYS` (and ``full_resolution`` when on); an FC network
    :data:`FC_KEYS`, its layers being fixed; an ensemble :data:`ENSEMBLE_KEYS`, with its
    members' records. ``network`` defaults to ``"unet"``.

    Raises:
        KeyError: When a key the network needs is missing.
        ValueError: For an unknown network.
    """
    network = values.get("network", "unet")
    if network == ENSEMBLE:
        return {
            "network": ENSEMBLE,
            "members": [architecture_record(member) for member in values["members"]],
            "logit_offsets": [float(offset) for offset in values["logit_offsets"]],
            "in_channels": int(values["in_channels"]),
        }
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; expected one of {', '.join(NETWORKS)}")
    if network != "unet":
        return {key: values[key] for key in FC_KEYS}
    record = {key: values[key] for key in UNET_KEYS}
    if values.get("full_resolution"):
        record["full_resolution"] = True
    return record


def output_stride(architecture: Mapping[str, Any]) -> int:
    """The factor input heights and widths must be divisible by, for the model an architecture
    record describes (the built model's ``output_stride``): ``2 ** encoder_depth`` for a U-Net,
    16 for the FC networks, the least common multiple of the members' for an ensemble.

    Raises:
        KeyError: When a key the network needs is missing.
        ValueError: For an unknown network.
    """
    network = architecture.get("network", "unet")
    if network == ENSEMBLE:
        return math.lcm(*(output_stride(member) for member in architecture["members"]))
    if network == "fc":
        return FC_OUTPUT_STRIDE
    if network == "fc_res":
        return RES_OUTPUT_STRIDE
    if network != "unet":
        raise ValueError(f"unknown network {network!r}; expected one of {', '.join(NETWORKS)}")
    return 2 ** int(architecture["encoder_depth"])
