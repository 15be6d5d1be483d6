"""The change model: a U-Net over a (before, after) pair, built from segmentation-models-pytorch.

Three ways to fuse the two dates (Caye Daudt et al., ICIP 2018):

- ``"early"``: the dates are stacked as ``2 * in_channels`` input channels of one U-Net (FC-EF);
- ``"siamese_diff"``: one encoder with shared weights reads each date, and the features are fused
  by their absolute difference ``|f_before - f_after|`` at every scale before the decoder
  (FC-Siam-diff);
- ``"siamese_concat"``: the same shared encoder, with the features of both dates concatenated at
  every scale, so the decoder sees twice the encoder's channels (FC-Siam-conc).

With ``full_resolution=True`` a light full-resolution stage (two 3x3 conv + batch norm + ReLU of
:data:`FULL_RESOLUTION_CHANNELS` channels, reading each date, or the stacked dates for early
fusion) is fused like the encoder features and read by the last decoder block as its skip, which
smp's U-Net otherwise lacks (its first encoder scale is the input itself, and the decoder drops
it). Off by default, so bundles without the key build as before.

The published fully convolutional networks (FC-EF, FC-Siam-diff, FC-Siam-conc, FC-EF-Res) are in
:mod:`groundbreak.train.fc_networks`; :func:`build_change_model` builds any of them from an
architecture record (``network`` ``"unet"``, the default, ``"fc"`` or ``"fc_res"``), and an
ensemble of them (``"ensemble"``, :class:`~groundbreak.train.ensemble_network.ChangeEnsemble`:
made from bundles by ``groundbreak ensemble``, never trained as one).

Every U-Net variant has the same three parts, ``encoder``, ``decoder`` and
``segmentation_head`` (and ``full_resolution_stage`` when on), so a state dict's keys depend
only on the architecture, never on how the model was trained. The parts come from smp's public
API: ``smp.create_model("unet", ...)`` builds them (the siamese_concat and full-resolution
decoders are a second instance of the same decoder class, for the other skip widths). Encoders
are always built without pretrained weights (nothing is downloaded), and encoder stages deeper
than ``encoder_depth`` are dropped (smp keeps them), so every parameter is trained and saved.
Encoder names are recorded by their public name: smp's deprecated ``timm-`` aliases of timm
models (``timm-regnetx_002``) become the ``tu-`` name smp builds them as (``tu-regnetx_002``),
with the same weights (:func:`public_encoder_name`).
The siamese encoders read both dates in one pass (the batch is doubled, then split).

Inputs: ``before`` and ``after`` are float tensors ``(B, in_channels, H, W)`` whose ``H`` and ``W``
are divisible by ``2 ** encoder_depth`` (:attr:`ChangeUNet.output_stride`); callers pad
anything else. The output is one logit per pixel, ``(B, 1, H, W)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from groundbreak.train.architecture import (  # noqa: F401  (re-exported: the model's names)
    ENSEMBLE,
    ENSEMBLE_KEYS,
    FC_KEYS,
    FUSIONS,
    NETWORKS,
    UNET_KEYS,
    Fusion,
    Network,
    architecture_record,
    public_encoder_name,
)
from groundbreak.train.ensemble_network import ChangeEnsemble
from groundbreak.train.fc_networks import FCEFRes, FCNet

FULL_RESOLUTION_CHANNELS = 16

def is_known_encoder(name: object) -> bool:
    """Whether ``name`` is a string smp can build as an encoder (a public or aliased name)."""
    if not isinstance(name, str) or not name:
        return False
    name = public_encoder_name(name)
    if name.startswith("tu-"):
        return bool(timm.is_model(name[3:]))
    return name in smp.encoders.get_encoder_names()


class ChangeUNet(nn.Module):
    """A U-Net that maps a (before, after) image pair to per-pixel change logits.

    Args:
        in_channels: Bands per date (the early-fusion encoder sees twice as many).
        fusion: How the two dates are combined: ``"early"``, ``"siamese_diff"`` or
            ``"siamese_concat"`` (see the module docstring).
        encoder_name: Any segmentation-models-pytorch encoder name (``"resnet18"``,
            ``"mobilenet_v2"``, ``"efficientnet-b0"``, ``"tu-regnetx_002"``...); always randomly
            initialised. Deprecated aliases are recorded by their public name.
        encoder_depth: Number of encoder stages (downsamplings), 1 to 5.
        decoder_channels: Output channels of each decoder block; one per encoder stage.
        full_resolution: Add the full-resolution stage read by the last decoder block.

    Raises:
        ValueError: For an unknown fusion or encoder, a bad depth, or decoder channels whose
            count differs from ``encoder_depth``.
    """

    def __init__(
        self,
        in_channels: int,
        fusion: Fusion = "early",
        encoder_name: str = "resnet18",
        encoder_depth: int = 5,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        full_resolution: bool = False,
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; expected one of {', '.join(FUSIONS)}")
        if int(in_channels) < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        if not 1 <= int(encoder_depth) <= 5:
            raise ValueError(f"encoder_depth must be between 1 and 5, got {encoder_depth}")
        decoder_channels = tuple(int(c) for c in decoder_channels)
        if len(decoder_channels) != encoder_depth:
            raise ValueError(
                f"decoder_channels has {len(decoder_channels)} entries but encoder_depth is "
                f"{encoder_depth}; give one width per encoder stage"
            )

        if not is_known_encoder(encoder_name):
            raise ValueError(f"unknown encoder {encoder_name!r}")

        self.in_channels = int(in_channels)
        self.fusion: Fusion = fusion
        self.encoder_name = public_encoder_name(encoder_name)
        self.encoder_depth = int(encoder_depth)
        self.decoder_channels = decoder_channels
        self.full_resolution = bool(full_resolution)

        encoder_in = 2 * self.in_channels if fusion == "early" else self.in_channels
        unet = smp.create_model(
            "unet",
            encoder_name=self.encoder_name,
            encoder_weights=None,
            in_channels=encoder_in,
            classes=1,
            encoder_depth=self.encoder_depth,
            decoder_channels=decoder_channels,
        )
        widen = 2 if fusion == "siamese_concat" else 1  # concat: both dates' features side by side
        if widen > 1 or self.full_resolution:
            encoder_channels = [widen * c for c in unet.encoder.out_channels]
            if self.full_resolution:
                # The decoder drops its first entry (the input scale): the stage's width goes
                # second, so the last block is built to read it as its skip.
                encoder_channels.insert(1, widen * FULL_RESOLUTION_CHANNELS)
            unet.decoder = type(unet.decoder)(
                encoder_channels=encoder_channels,
                decoder_channels=decoder_channels,
                n_blocks=self.encoder_depth,
                add_center_block=self.encoder_name.startswith("vgg"),
            )
            unet.initialize()
        if self.full_resolution:
            width = FULL_RESOLUTION_CHANNELS
            self.full_resolution_stage = nn.Sequential(
                nn.Conv2d(encoder_in, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            )
        self.encoder = unet.encoder
        self.decoder = unet.decoder
        self.segmentation_head = unet.segmentation_head
        _drop_unused_stages(self.encoder, encoder_in)

    @property
    def output_stride(self) -> int:
        """The factor that input heights and widths must be divisible by (``2 ** depth``)."""
        return int(self.encoder.output_stride)

    @property
    def architecture(self) -> dict[str, Any]:
        """The constructor arguments, as recorded in a model bundle's ``model.json``."""
        record: dict[str, Any] = {
            "fusion": self.fusion,
            "encoder_name": self.encoder_name,
            "encoder_depth": self.encoder_depth,
            "decoder_channels": list(self.decoder_channels),
            "in_channels": self.in_channels,
        }
        if self.full_resolution:
            record["full_resolution"] = True
        return record

    def check_input(self, before: torch.Tensor, after: torch.Tensor) -> None:
        """Raise ValueError unless both dates are ``(B, in_channels, H, W)`` with H, W divisible."""
        if before.shape != after.shape:
            raise ValueError(
                f"before and after must have the same shape, got {tuple(before.shape)} and "
                f"{tuple(after.shape)}"
            )
        if before.ndim != 4 or before.shape[1] != self.in_channels:
            raise ValueError(
                f"expected inputs of shape (B, {self.in_channels}, H, W), got {tuple(before.shape)}"
            )
        height, width = before.shape[-2:]
        stride = self.output_stride
        if height % stride or width % stride:
            padded = (-(-height // stride) * stride, -(-width // stride) * stride)
            raise ValueError(
                f"input height and width must be divisible by {stride} (2**encoder_depth), got "
                f"{height}x{width}; pad the inputs to {padded[0]}x{padded[1]}"
            )

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Change logits ``(B, 1, H, W)`` for a batch of before/after images."""
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self.check_input(before, after)
        features = self._fused_features(before, after)
        return self.segmentation_head(self.decoder(features))

    def _fused_features(self, before: torch.Tensor, after: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features of the pair, fused at every scale as the fusion mode says (with the
        full-resolution stage's second, where the decoder reads it)."""
        if self.fusion == "early":
            x = torch.cat([before, after], dim=1)
            features = self.encoder(x)
            if self.full_resolution:
                features.insert(1, self.full_resolution_stage(x))
            return features
        # One pass of the shared encoder over both dates, split back along the batch.
        x = torch.cat([before, after], dim=0)
        both = self.encoder(x)
        if self.full_resolution:
            both.insert(1, self.full_resolution_stage(x))
        batch = before.shape[0]
        if self.fusion == "siamese_diff":
            return [torch.abs(f[:batch] - f[batch:]) for f in both]
        return [torch.cat([f[:batch], f[batch:]], dim=1) for f in both]


class SkippedStage(nn.Module):
    """A pass-through that stands in for an encoder stage deeper than ``encoder_depth``."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Return the input unchanged (extra arguments, such as a drop rate, are ignored)."""
        return x


def _drop_unused_stages(encoder: nn.Module, in_channels: int) -> None:
    """Replace the encoder modules whose weights never reach the features with a pass-through.

    smp encoders keep every stage of the backbone whatever their depth (a depth-3 resnet18
    still holds ``layer3`` and ``layer4``; mobilenet_v2 even runs a stage it then discards).
    Those weights never get a gradient, which wastes time and bundle space and breaks DDP
    (unused parameters), so they are dropped. Which weights matter is found by differentiating
    the features of one small forward pass, so this works for any encoder.
    """
    was_training = encoder.training
    side = max(64, 2 * int(cast(int, encoder.output_stride)))
    named = [(name, p) for name, p in encoder.named_parameters() if p.requires_grad]
    try:
        encoder.eval()  # running statistics stay untouched
        with torch.enable_grad():
            features = encoder(torch.randn(2, in_channels, side, side))
            total = sum(f.sum() for f in features[1:])
            grads = torch.autograd.grad(total, [p for _, p in named], allow_unused=True)
    finally:
        encoder.train(was_training)
    unused = {id(p) for (_, p), grad in zip(named, grads, strict=True) if grad is None}

    def prune(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            params = list(child.parameters())
            if params and all(id(p) in unused for p in params):
                setattr(parent, name, SkippedStage())
            else:
                prune(child)

    if unused:
        prune(encoder)


ChangeModel = ChangeUNet | FCNet | FCEFRes | ChangeEnsemble
"""Any change model: ``model(before, after)`` gives logits; it has ``architecture``,
``output_stride``, ``in_channels`` and ``check_input``."""


def build_change_model(architecture: Mapping[str, Any]) -> ChangeModel:
    """The change model of an architecture record (see :func:`architecture_record`).

    Raises:
        KeyError: When a key the network needs is missing.
        ValueError: For an unknown network, or arguments the network refuses.
    """
    record = architecture_record(architecture)
    network = record.pop("network", "unet")
    if network == ENSEMBLE:
        ensemble = ChangeEnsemble(
            [build_change_model(member) for member in record["members"]], record["logit_offsets"]
        )
        if ensemble.in_channels != record["in_channels"]:
            raise ValueError(
                f"in_channels {record['in_channels']} differs from the members' "
                f"{ensemble.in_channels}"
            )
        return ensemble
    if network == "fc":
        return FCNet(**record)
    if network == "fc_res":
        return FCEFRes(**record)
    return ChangeUNet(**record)
