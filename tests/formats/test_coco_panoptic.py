"""The one COCO panoptic PNG encoding: RGB <-> id both ways, and the reader against PIL's own decoding."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from odise_pl.errors import DatasetError
from odise_pl.formats.coco_panoptic import id_to_rgb, read_label_image, read_panoptic_png, rgb_to_id


def test_rgb_and_id_are_inverse_over_the_whole_id_range():
    ids = np.random.default_rng(0).integers(0, 2**24, size=(64, 64))
    rgb = id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    assert np.array_equal(rgb_to_id(rgb), ids)
    assert rgb_to_id((1, 2, 3)) == 1 + 2 * 256 + 3 * 65536  # a colour tuple, as the ADE20K preparation has


def test_read_panoptic_png_equals_the_rgb_formula(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    ids = read_panoptic_png(tmp_path / "x.png")
    assert ids.dtype == np.uint32 and np.array_equal(ids, rgb_to_id(rgb))


def test_read_label_image_keeps_values_and_names_bad_files(tmp_path):
    labels = np.array([[0, 255], [65535, 7]], dtype=np.uint16)
    Image.fromarray(labels).save(tmp_path / "l.tif")
    out = read_label_image(tmp_path / "l.tif")
    assert out.dtype == np.int64 and out.tolist() == labels.tolist()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DatasetError, match="rgb.png has mode RGB"):
        read_label_image(tmp_path / "rgb.png")
    with pytest.raises(DatasetError, match="absent.png does not exist"):
        read_panoptic_png(tmp_path / "absent.png")
