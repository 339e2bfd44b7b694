"""Property-based tests: whatever the panoptic JSON, PNG or image holds, the reader answers with data or a DatasetError."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from odise_pl.data_modules.coco_panoptic import CocoPanopticDataset
from odise_pl.data_modules.panoptic_files import PanopticRecord, load_panoptic_json, read_rgb_image
from odise_pl.data_modules.transforms import ResizeShortestEdge
from odise_pl.errors import DatasetError
from odise_pl.formats.coco_panoptic import read_panoptic_png

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
_counter = itertools.count()
KEYS = [
    "images",
    "annotations",
    "categories",
    "segments_info",
    "id",
    "image_id",
    "file_name",
    "category_id",
    "isthing",
    "iscrowd",
    "name",
    "height",
    "width",
    "area",
    "bbox",
]
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 2**70), st.floats(allow_nan=False), st.sampled_from(["a.png", "", "1", "x/../y.png", "\x00"])
)
_json = st.recursive(
    _scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)), max_leaves=12
)


def _valid_like() -> st.SearchStrategy:
    """Mostly well-formed COCO panoptic JSON with random ids and references."""
    ids = st.one_of(st.integers(-1, 5), st.sampled_from([1.0, 2.5, float("inf"), float("nan"), "1", "x", None, [1], {"id": 1}]))
    seg = st.fixed_dictionaries({"id": ids, "category_id": ids}, optional={"iscrowd": st.sampled_from([0, 1, "x"])})
    ann = st.fixed_dictionaries(
        {"image_id": ids, "file_name": st.sampled_from(["a.png", "b.png"]), "segments_info": st.lists(seg, max_size=3)}
    )
    image = st.fixed_dictionaries({"id": ids, "file_name": st.sampled_from(["a.jpg", "b.jpg"])})
    cat = st.fixed_dictionaries({"id": ids, "name": st.text(max_size=4), "isthing": st.sampled_from([0, 1])})
    return st.fixed_dictionaries(
        {"images": st.lists(image, max_size=3), "annotations": st.lists(ann, max_size=3), "categories": st.lists(cat, max_size=3)}
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("panoptic_props")


def _read_json_file(folder: Path, content: bytes) -> None:
    path = folder / f"p{next(_counter)}.json"
    path.write_bytes(content)
    try:
        categories, records = load_panoptic_json(path, folder, folder)
    except DatasetError as err:
        assert str(err)
        return
    assert isinstance(categories, list) and all(isinstance(r, PanopticRecord) for r in records)


@SETTINGS
@given(content=st.binary(max_size=200))
def test_any_bytes_as_json(folder, content):
    _read_json_file(folder, content)


@SETTINGS
@given(data=st.one_of(_json, _valid_like()))
def test_any_json_structure(folder, data):
    _read_json_file(folder, json.dumps(data).encode())


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@SETTINGS
@given(
    content=st.one_of(
        st.binary(max_size=300),
        st.tuples(st.integers(0, 400), st.binary(min_size=1, max_size=8)).map(
            lambda cut: _png_bytes(np.full((6, 5, 3), 7, np.uint8))[: cut[0]] + cut[1]
        ),
    )
)
def test_any_bytes_as_png_or_image(folder, content):
    path = folder / f"i{next(_counter)}.png"
    path.write_bytes(content)
    for read in (read_panoptic_png, read_rgb_image):
        try:
            out = read(path)
        except DatasetError as err:
            assert str(path) in str(err)
            continue
        assert isinstance(out, np.ndarray) and out.ndim in (2, 3)


@SETTINGS
@given(
    ids=st.lists(st.integers(0, 4), min_size=12, max_size=12),
    segments=st.lists(st.integers(1, 4), max_size=4, unique=True),
    image_hw=st.sampled_from([(3, 4), (4, 3)]),
)
def test_png_and_json_that_disagree(folder, ids, segments, image_hw):
    """Segment ids in the PNG but not in segments_info, or sizes that differ: a DatasetError naming both files."""
    n = next(_counter)
    png, jpg = folder / f"pan{n}.png", folder / f"img{n}.png"
    id_map = np.asarray(ids, np.uint8).reshape(3, 4)
    Image.fromarray(np.stack([id_map, 0 * id_map, 0 * id_map], -1)).save(png)
    Image.fromarray(np.zeros((*image_hw, 3), np.uint8)).save(jpg)
    record = PanopticRecord(7, jpg, png, [{"id": s, "category": 0, "isthing": True, "iscrowd": False} for s in segments])
    dataset = CocoPanopticDataset([record], transform=ResizeShortestEdge(8, 16), train=False, json_path="x.json")
    missing = sorted(set(ids) - {0} - set(segments))
    try:
        item = dataset[0]
    except DatasetError as err:
        message = str(err)
        assert str(png) in message
        assert (image_hw != (3, 4) and str(jpg) in message) or (missing and f"segment id {missing[0]}" in message)
        return
    assert not missing and image_hw == (3, 4)
    assert item["target"]["gt_panoptic"].shape == (3, 4)


@SETTINGS
@given(
    categories=st.one_of(
        _json,
        st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "id": st.one_of(st.integers(), st.just(float("inf")), st.text(max_size=2)),
                    "name": st.one_of(st.text(max_size=3), st.none()),
                    "isthing": st.sampled_from([0, 1, None]),
                },
            ),
            max_size=3,
        ),
    )
)
def test_categories_of_any_shape(folder, categories):
    from odise_pl.data_modules.coco_panoptic import CocoPanopticDataModule

    root = folder / f"root{next(_counter)}"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "panoptic_val2017.json").write_text(json.dumps({"categories": categories}))
    try:
        cats = CocoPanopticDataModule(root=str(root)).categories
    except DatasetError as err:
        assert "panoptic_val2017.json" in str(err)
        return
    assert len(cats) == len(categories) > 0


def test_deeply_nested_json_is_a_dataset_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000)
    with pytest.raises(DatasetError, match=f"{path} is"):
        load_panoptic_json(path, tmp_path, tmp_path)


def test_corrupt_panoptic_png_names_the_file(tmp_path):
    png = tmp_path / "000.png"
    png.write_bytes(_png_bytes(np.zeros((4, 4, 3), np.uint8))[:40])
    with pytest.raises(DatasetError, match=f"cannot decode panoptic PNG {png}: .*corrupt"):
        read_panoptic_png(png)
    with pytest.raises(DatasetError, match=f"panoptic PNG {tmp_path / 'absent.png'} does not exist"):
        read_panoptic_png(tmp_path / "absent.png")


@SETTINGS
@given(
    shape=st.tuples(st.integers(0, 12), st.integers(0, 12)),
    values=st.lists(st.integers(0, 2**24 - 1), min_size=1, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_distinct_ids_equal_numpy_unique(shape, values, seed):
    """The run-start shortcut of the loader's id check equals np.unique, and searchsorted its inverse."""
    from odise_pl.data_modules.coco_panoptic import distinct_ids

    rng = np.random.default_rng(seed)
    ids = rng.choice(np.array(values, dtype=np.int64), size=shape)
    ids = np.repeat(ids, rng.integers(1, 4), axis=1)  # runs, as in panoptic maps
    present, inverse = np.unique(ids, return_inverse=True)
    assert np.array_equal(distinct_ids(ids), present)
    assert np.array_equal(np.searchsorted(present, ids), inverse.reshape(ids.shape))
