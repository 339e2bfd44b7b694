"""LSJ and evaluation resize: shapes, padding, and image/mask alignment; collate padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from odise_pl.data_modules.collate import PanopticCollate
from odise_pl.data_modules.transforms import JitterParams, LargeScaleJitter, ResizeShortestEdge, build_targets


def _colour_coded(height: int, width: int, seed: int = 0):
    """An image whose colour *is* its segment id (blocks), so alignment can be read back."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((height, width), np.int64)
    palette = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]
    for k in range(1, 6):
        y, x = rng.integers(0, height - 20), rng.integers(0, width - 20)
        ids[y : y + rng.integers(12, 40), x : x + rng.integers(12, 40)] = k
    image = np.zeros((height, width, 3), np.uint8)
    for k, colour in enumerate(palette, start=1):
        image[ids == k] = colour
    return image, ids, palette


def _decode(image: np.ndarray, palette) -> np.ndarray:
    """Nearest palette colour per pixel (0 = black)."""
    colours = np.array([(0, 0, 0)] + palette, np.int64)
    dist = ((image[..., None, :].astype(np.int64) - colours) ** 2).sum(-1)
    return dist.argmin(-1)


@pytest.mark.parametrize("seed", range(6))
def test_lsj_shapes_and_alignment(seed):
    image, ids, palette = _colour_coded(90, 140, seed)
    lsj = LargeScaleJitter(crop_size=96, min_scale=0.3, max_scale=2.0)
    out_image, out_ids, (h, w) = lsj(image, ids, np.random.default_rng(seed))
    assert out_image.shape == (96, 96, 3) and out_ids.shape == (96, 96)
    # padding: grey 128 as detectron2's FixedSizeCrop (the reference), ids VOID
    assert (out_image[h:] == 128).all() and (out_image[:, w:] == 128).all()
    assert (out_ids[h:] == 0).all() and (out_ids[:, w:] == 0).all()
    decoded = _decode(out_image, palette)
    # away from region borders (bilinear blur), the pixel colour says which segment it is in
    interior = np.ones_like(out_ids, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            interior &= np.roll(out_ids, (dy, dx), (0, 1)) == out_ids
    interior[h:], interior[:, w:] = False, False  # the padding is grey, not a segment colour
    assert interior.any()
    assert (decoded[interior] == out_ids[interior]).all()


def test_flip_mirrors_image_and_masks():
    image, ids, _ = _colour_coded(64, 80)
    lsj = LargeScaleJitter(crop_size=80)
    plain = lsj.apply(JitterParams(False, 64, 80, 0, 0), image, ids)
    flipped = lsj.apply(JitterParams(True, 64, 80, 0, 0), image, ids)
    assert plain[2] == flipped[2] == (64, 80)
    np.testing.assert_array_equal(flipped[0][:64], plain[0][:64, ::-1])
    np.testing.assert_array_equal(flipped[1][:64], plain[1][:64, ::-1])


def test_lsj_scale_follows_resize_scale():
    lsj = LargeScaleJitter(crop_size=100, min_scale=0.5, max_scale=0.5, flip=False)
    params = lsj.sample(np.random.default_rng(0), 200, 400)  # fits a 50x50 target: 25x50
    assert (params.height, params.width, params.top, params.left) == (25, 50, 0, 0)
    big = LargeScaleJitter(crop_size=100, min_scale=2.0, max_scale=2.0).sample(np.random.default_rng(0), 100, 50)
    assert (big.height, big.width) == (200, 100) and 0 <= big.top <= 100 and big.left == 0


def test_eval_resize_short_side_and_max_long_side():
    assert ResizeShortestEdge(1024, 2560).output_size(427, 640) == (1024, 1535)
    assert ResizeShortestEdge(1024, 1333).output_size(100, 1000) == (133, 1333)
    image, ids, _ = _colour_coded(60, 90)
    out_image, out_ids, size = ResizeShortestEdge(30, 100)(image, ids)
    assert out_image.shape == (30, 45, 3) and out_ids.shape == (30, 45) and size == (30, 45)


def test_targets_drop_segments_without_pixels():
    ids = np.array([[1, 1], [2, 0]])
    segments = [
        {"id": i, "category": c, "isthing": t, "iscrowd": k}
        for i, c, t, k in [(1, 4, True, False), (2, 7, False, True), (3, 1, True, False)]
    ]
    target = build_targets(ids, segments, image_id=9)
    assert target["masks"].shape == (2, 2, 2) and target["masks"].dtype == torch.bool
    assert target["labels"].tolist() == [4, 7] and target["iscrowd"].tolist() == [False, True]
    assert target["is_thing"].tolist() == [True, False] and target["image_id"] == 9


def test_lsj_pads_the_image_with_128_and_the_ids_with_void():
    image = np.full((40, 20, 3), 7, np.uint8)
    ids = np.full((40, 20), 5, np.int64)
    params = JitterParams(flip=False, height=40, width=20, top=0, left=0)
    out_image, out_ids, valid = LargeScaleJitter(crop_size=64).apply(params, image, ids)
    assert valid == (40, 20)
    assert (out_image[:40, :20] == 7).all() and (out_ids[:40, :20] == 5).all()
    assert (out_image[40:] == 128).all() and (out_image[:, 20:] == 128).all()
    assert (out_ids[40:] == 0).all() and (out_ids[:, 20:] == 0).all()
    black, _, _ = LargeScaleJitter(crop_size=64, pad_value=0).apply(params, image, ids)
    assert (black[40:] == 0).all()


def test_collate_pads_to_size_divisibility():
    def item(h, w, n, captions):
        return {
            "image": torch.full((3, h, w), 7, dtype=torch.uint8),
            "image_size": (h, w),
            "target": {"masks": torch.ones(n, h, w, dtype=torch.bool), "labels": torch.zeros(n)},
            "captions": captions,
        }

    batch = PanopticCollate(32)([item(40, 70, 2, ["a"]), None, item(33, 20, 0, None)])
    assert batch["images"].shape == (2, 3, 64, 96) and batch["images"].dtype == torch.uint8
    assert batch["image_sizes"].tolist() == [[40, 70], [33, 20]]
    assert batch["targets"][0]["masks"].shape == (2, 64, 96)
    assert batch["targets"][1]["masks"].shape == (0, 64, 96)
    assert batch["targets"][0]["masks"][:, 40:].sum() == 0 and batch["images"][1, :, 33:].sum() == 0
    assert batch["captions"] == [["a"], []]
    assert "captions" not in PanopticCollate(32)([item(8, 8, 1, None)])
