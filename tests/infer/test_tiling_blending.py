"""Window layouts and row-band blending: coverage, phase, bounded buffers, exact blending."""

from __future__ import annotations

import numpy as np
import pytest

from groundbreak.infer.prediction.blending import RowBandBlender, blend_weights
from groundbreak.infer.prediction.tiling import WindowLayout, axis_offsets, reflect_pad


@pytest.mark.parametrize(
    ("length", "size", "stride", "margin"),
    [(96, 64, 32, 16), (10980, 512, 384, 64), (513, 512, 384, 64), (100, 32, 32, 0), (7, 8, 8, 0)],
)
def test_axis_offsets_cover_the_axis_on_one_lattice(
    length: int, size: int, stride: int, margin: int
) -> None:
    offsets = axis_offsets(length, size, stride, margin)
    if length <= size:
        assert offsets == (0,)
        return
    assert offsets[0] == -margin
    assert all(b - a == stride for a, b in zip(offsets, offsets[1:], strict=False))
    assert offsets[-1] + size >= length + margin
    assert offsets[-1] < length  # no window lies wholly outside the scene


def test_layout_keeps_every_window_in_phase_with_the_output_stride() -> None:
    layout = WindowLayout.for_scene(1000, 700, window=256, overlap=64, multiple=32)
    assert (layout.window_height, layout.window_width) == (256, 256)
    assert all(off % 32 == 0 for off in layout.row_offsets + layout.col_offsets)
    batches = layout.batches(3)
    assert [b.index for b in batches] == list(range(len(batches)))
    assert sum(len(b.col_offs) for b in batches) == layout.window_count
    with pytest.raises(ValueError, match="multiple"):
        WindowLayout.for_scene(1000, 700, window=256, overlap=60, multiple=32)


def test_small_scene_gets_one_window_rounded_up_to_the_output_stride() -> None:
    layout = WindowLayout.for_scene(37, 51, window=512, overlap=128, multiple=32)
    assert (layout.window_height, layout.window_width) == (64, 64)
    assert layout.row_offsets == layout.col_offsets == (0,)
    window, pads = layout.block_of(layout.batches(8)[0])
    assert (window.height, window.width) == (37, 51)
    assert pads == (0, 27, 0, 13)


def test_reflect_pad_mirrors_at_the_edges() -> None:
    array = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    padded = reflect_pad(array, (1, 2, 2, 1))
    assert padded.shape == (1, 6, 7)
    np.testing.assert_array_equal(padded[0, 1:4, 2:6], array[0])
    np.testing.assert_array_equal(padded[0, 0, 2:6], array[0, 1])  # row above = second row
    np.testing.assert_array_equal(padded[0, 1:4, 1], array[0, :, 1])


def test_cosine_weights_are_smooth_positive_and_peak_in_the_middle() -> None:
    weights = blend_weights(64, 32, "cosine")
    assert weights.shape == (64, 32) and weights.min() >= 0.01
    assert weights[32, 16] == pytest.approx(weights.max())
    assert (blend_weights(8, 8, "uniform") == 1).all()


def test_row_band_blender_equals_a_full_scene_blend_with_bounded_buffers() -> None:
    height, width = 700, 300
    layout = WindowLayout.for_scene(height, width, window=128, overlap=32, multiple=32)
    weights = blend_weights(128, 128, "cosine")
    rng = np.random.default_rng(0)
    invalid = np.zeros((height, width), bool)
    invalid[100:120, 50:90] = True

    full_sum = np.zeros((height, width))
    full_weight = np.zeros((height, width))
    flushed: list[tuple[int, np.ndarray]] = []
    blender = RowBandBlender(height, width, weights, lambda r, p: flushed.append((r, p)), 256)
    assert blender._weight_sum.shape == (128 + 256, width)  # rows in flight only
    for batch in layout.batches(2):
        blender.complete_rows_before(batch.row_off)
        for col in batch.col_offs:
            probability = rng.random((128, 128)).astype(np.float32)
            rows = slice(max(batch.row_off, 0), min(batch.row_off + 128, height))
            cols = slice(max(col, 0), min(col + 128, width))
            inside = (
                slice(rows.start - batch.row_off, rows.stop - batch.row_off),
                slice(cols.start - col, cols.stop - col),
            )
            valid = np.ones((128, 128), bool)
            valid[inside] = ~invalid[rows, cols]
            blender.add(batch.row_off, col, probability, valid)
            full_sum[rows, cols] += probability[inside] * weights[inside]
            full_weight[rows, cols] += weights[inside]
    blender.close()

    assert [r for r, _ in flushed] == [0, 256, 512]  # in order, block-aligned
    assert [p.shape[0] for _, p in flushed] == [256, 256, 188]
    blended = np.concatenate([p for _, p in flushed])
    expected = full_sum / full_weight
    expected[invalid] = np.nan
    np.testing.assert_allclose(blended, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="closed"):
        blender.add(0, 0, np.zeros((128, 128), np.float32), np.ones((128, 128), bool))


def test_row_band_blender_refuses_windows_out_of_row_order() -> None:
    blender = RowBandBlender(600, 64, blend_weights(64, 64), lambda r, p: None, flush_rows=64)
    blender.complete_rows_before(300)
    with pytest.raises(ValueError, match="row order"):
        blender.add(0, 0, np.zeros((64, 64), np.float32), np.ones((64, 64), bool))
