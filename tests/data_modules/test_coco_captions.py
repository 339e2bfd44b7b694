"""COCO captions joined to panoptic image ids, on small files written here."""

from __future__ import annotations

import json
import warnings

import pytest

from odise_pl.data_modules.coco_captions import load_captions
from odise_pl.errors import DatasetError


def write_captions(tmp_path, annotations, name="captions_train2017.json"):
    images = sorted({a["image_id"] for a in annotations if "image_id" in a})
    data = {"info": {}, "licenses": [], "annotations": annotations, "images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in images]}
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def ann(id_, image_id, caption):
    return {"id": id_, "image_id": image_id, "caption": caption}


@pytest.fixture
def captions_file(tmp_path):
    return write_captions(
        tmp_path,
        [
            ann(1, 139, "A woman stands in the dining area at the table.\n"),
            ann(2, 285, "A big brown bear sitting in the grass. "),
            ann(3, 139, "A room with chairs, a table, and a woman in it."),
            ann(4, 632, "Bedroom scene with a bookcase, blue comforter and window."),
            ann(5, 285, "   "),  # blank: dropped
            ann(6, 285, "A large bear that is sitting on grass."),
        ],
    )


def test_joins_by_image_id_in_requested_order(captions_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every image of the file is requested: no warning
        captions = load_captions(captions_file, [632, 139, 285])
    assert list(captions) == [632, 139, 285]
    assert captions[139] == ["A woman stands in the dining area at the table.", "A room with chairs, a table, and a woman in it."]
    assert captions[285] == ["A big brown bear sitting in the grass.", "A large bear that is sitting on grass."]
    assert captions[632] == ["Bedroom scene with a bookcase, blue comforter and window."]


def test_missing_captions_name_the_count_the_ids_and_the_file(captions_file):
    with pytest.raises(DatasetError) as info:
        load_captions(captions_file, [139, 7, 285, 9])
    message = str(info.value)
    assert "2 of 4 images have no caption" in message
    assert "7, 9" in message and str(captions_file) in message
    assert "captions_val2017.json" in message  # says what to do


def test_many_missing_ids_are_shortened(tmp_path):
    path = write_captions(tmp_path, [ann(1, 1, "A dog.")])
    with pytest.raises(DatasetError, match=r"30 of 31 images .* 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, \.\.\."):
        load_captions(path, range(1, 32))


def test_only_blank_captions_count_as_missing(tmp_path):
    path = write_captions(tmp_path, [ann(1, 5, " "), ann(2, 6, "A cat.")])
    with pytest.raises(DatasetError, match="1 of 2 images have no caption, e.g. image ids 5"):
        load_captions(path, [5, 6])


def test_captions_of_other_images_warn_ignore_or_error(captions_file):
    with pytest.warns(UserWarning, match=r"3 captions belong to 1 images outside the 2 requested.*285"):
        captions = load_captions(captions_file, [139, 632])
    assert set(captions) == {139, 632}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_captions(captions_file, [139], unknown_images="ignore") == {139: captions[139]}
    with pytest.raises(DatasetError, match="outside the 1 requested"):
        load_captions(captions_file, [139], unknown_images="error")
    with pytest.raises(ValueError, match="unknown_images"):
        load_captions(captions_file, [139], unknown_images="drop")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_captions(tmp_path / "captions_val2017.json", [1])
    bad = tmp_path / "bad.json"
    bad.write_text('{"annotations": [')
    with pytest.raises(DatasetError, match=r"bad.json: not valid JSON \(line 1"):
        load_captions(bad, [1])
    bad.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="not a COCO annotation file"):
        load_captions(bad, [1])
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="no 'annotations' list"):
        load_captions(bad, [1])
    no_caption = write_captions(tmp_path, [{"id": 8, "image_id": 1, "bbox": [0, 0, 1, 1]}], name="inst.json")
    with pytest.raises(DatasetError, match="annotation 8 of image 1 has no 'caption'"):
        load_captions(no_caption, [1])
