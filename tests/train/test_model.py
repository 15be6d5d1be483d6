"""ChangeUNet: every fusion x a few encoders, forward, backward, sizes, band counts, export."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from groundbreak.train.model import FUSIONS, ChangeUNet, SkippedStage

ENCODERS = ("resnet18", "mobilenet_v2")
DEPTH = 3
DECODER = (32, 16, 8)
BANDS = 4


def tiny_model(fusion: str, encoder: str = "resnet18", in_channels: int = BANDS) -> ChangeUNet:
    """A small ChangeUNet: three encoder stages, narrow decoder."""
    return ChangeUNet(in_channels, fusion, encoder, encoder_depth=DEPTH, decoder_channels=DECODER)


def pair(batch: int = 2, channels: int = BANDS, height: int = 32, width: int = 32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, channels, height, width)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


@pytest.fixture(
    scope="class",
    params=list(itertools.product(FUSIONS, ENCODERS)),
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def model(request: pytest.FixtureRequest) -> ChangeUNet:
    torch.manual_seed(0)
    fusion, encoder = request.param
    return tiny_model(fusion, encoder)


class TestChangeUNet:
    """Shared checks that every fusion x encoder combination must pass."""

    def test_forward_gives_one_logit_per_pixel(self, model: ChangeUNet) -> None:
        model.eval()
        before, after = pair(height=64, width=32)
        with torch.no_grad():
            logits = model(before, after)
        assert logits.shape == (2, 1, 64, 32)
        assert logits.dtype == torch.float32
        assert torch.isfinite(logits).all()

    def test_every_parameter_gets_a_gradient(self, model: ChangeUNet) -> None:
        # No dead weights: DDP needs every parameter to take part (deeper stages are dropped).
        model.train()
        model.zero_grad()
        before, after = pair()
        model(before, after).square().mean().backward()
        first_conv = next(m for m in model.encoder.modules() if isinstance(m, nn.Conv2d))
        assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
        no_gradient = [name for name, p in model.named_parameters() if p.grad is None]
        assert no_gradient == []
        model.zero_grad()

    def test_rejects_sizes_not_divisible_by_the_stride(self, model: ChangeUNet) -> None:
        before, after = pair(height=36, width=32)
        with pytest.raises(ValueError, match=r"divisible by 8 .*pad the inputs to 40x32"):
            model(before, after)

    def test_rejects_dates_of_different_shapes(self, model: ChangeUNet) -> None:
        before, _ = pair()
        _, after = pair(width=64)
        with pytest.raises(ValueError, match="same shape"):
            model(before, after)

    def test_rejects_wrong_band_count(self, model: ChangeUNet) -> None:
        before, after = pair(channels=BANDS + 1)
        with pytest.raises(ValueError, match=rf"\(B, {BANDS}, H, W\)"):
            model(before, after)

    def test_channels_last_gives_the_same_logits(self, model: ChangeUNet) -> None:
        model.eval()
        before, after = pair()
        with torch.no_grad():
            expected = model(before, after)
            model.to(memory_format=torch.channels_last)
            got = model(
                before.contiguous(memory_format=torch.channels_last),
                after.contiguous(memory_format=torch.channels_last),
            )
            model.to(memory_format=torch.contiguous_format)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    def test_state_dict_has_encoder_decoder_and_head_only(self, model: ChangeUNet) -> None:
        prefixes = {name.split(".", 1)[0] for name in model.state_dict()}
        assert prefixes == {"encoder", "decoder", "segmentation_head"}



def test_stages_deeper_than_the_depth_are_dropped() -> None:
    shallow = tiny_model("early")
    assert isinstance(shallow.encoder.layer3, SkippedStage)
    assert isinstance(shallow.encoder.layer4, SkippedStage)
    assert not any(name.startswith("encoder.layer3") for name in shallow.state_dict())
    deep = ChangeUNet(BANDS, "early", encoder_depth=5, decoder_channels=(32, 16, 8, 8, 8))
    assert not any(isinstance(m, SkippedStage) for m in deep.modules())


def test_architecture_rebuilds_the_same_model() -> None:
    model = tiny_model("siamese_concat").eval()
    rebuilt = ChangeUNet(**model.architecture).eval()
    rebuilt.load_state_dict(model.state_dict())
    before, after = pair()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(before, after), model(before, after))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_efficientnet_encoder_builds_without_weights(fusion: str) -> None:
    model = tiny_model(fusion, encoder="efficientnet-b0").eval()
    before, after = pair(batch=1)
    with torch.no_grad():
        assert model(before, after).shape == (1, 1, 32, 32)


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("bands", [3, 10, 13])
def test_any_band_count(fusion: str, bands: int) -> None:
    model = tiny_model(fusion, in_channels=bands).eval()
    before, after = pair(batch=1, channels=bands)
    with torch.no_grad():
        assert model(before, after).shape == (1, 1, 32, 32)


def test_siamese_diff_is_symmetric_in_the_dates() -> None:
    model = tiny_model("siamese_diff").eval()
    before, after = pair()
    with torch.no_grad():
        torch.testing.assert_close(model(before, after), model(after, before))


def test_early_fusion_sees_the_order_of_the_dates() -> None:
    model = tiny_model("early").eval()
    before, after = pair()
    with torch.no_grad():
        assert not torch.allclose(model(before, after), model(after, before))


def test_siamese_concat_decoder_takes_doubled_encoder_channels() -> None:
    model = tiny_model("siamese_concat")
    deepest = model.encoder.out_channels[-1]
    first_block = model.decoder.blocks[0].conv1[0]
    skip = model.encoder.out_channels[-2]
    assert first_block.in_channels == 2 * deepest + 2 * skip


@pytest.mark.parametrize("fusion", ["siamese_diff", "siamese_concat"])
def test_torch_export_matches_eager(fusion: str) -> None:
    model = tiny_model(fusion).eval()
    before, after = pair(batch=1)
    exported = torch.export.export(model, (before, after))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(before, after), model(before, after))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fusion": "late"}, "unknown fusion 'late'"),
        ({"encoder_name": "resnet-nope"}, "unknown encoder 'resnet-nope'"),
        ({"encoder_depth": 6, "decoder_channels": (8,) * 6}, "between 1 and 5"),
        ({"encoder_depth": 4, "decoder_channels": (16, 8)}, "2 entries but encoder_depth is 4"),
        ({"in_channels": 0}, "at least 1"),
    ],
)
def test_bad_construction_arguments(kwargs: dict, message: str) -> None:
    arguments = {"in_channels": 3, "encoder_depth": 2, "decoder_channels": (16, 8)} | kwargs
    with pytest.raises(ValueError, match=message):
        ChangeUNet(**arguments)
