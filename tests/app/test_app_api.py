"""``odise-pl app`` called as scripts call it: ``gradio_client`` on the named endpoint ``/segment``.

The demo runs in this process on a tiny run directory (``conftest.py``); each test checks what a
user of the page or the API gets: the annotated image and the segments first, the table, the three
files ``predict`` writes, and a message (not a stopped app) for bad input.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odise_pl.cli import main
from odise_pl.formats.coco_panoptic import read_panoptic_png
from tests.app.conftest import PHOTOS

TYPED = "person,man,woman;dog;grass:stuff;sky:stuff;tree:stuff"
TYPED_NAMES = ["person", "dog", "grass", "sky", "tree"]
SEGMENT_KEYS = {"id", "category_name", "score", "area", "is_thing"}


@pytest.fixture(scope="module")
def client(served):
    """A script's client, offline too: no telemetry, and huggingface_hub (which builds its headers) offline."""
    import huggingface_hub.constants
    from gradio_client import Client

    page, _ = served
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield Client(page.local_url, verbose=False, analytics_enabled=False)


def segment(client, image, vocabulary: str = TYPED, **kwargs):
    from gradio_client import handle_file

    return client.predict(handle_file(str(image)), vocabulary, api_name="/segment", **kwargs)


def app_error(client, image, vocabulary: str = TYPED, **kwargs) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        segment(client, image, vocabulary, **kwargs)
    return str(caught.value)


@pytest.fixture(scope="module")
def first_call(client):
    return segment(client, PHOTOS[0])


def test_segment_returns_the_annotated_image_then_the_segments(first_call):
    annotated, segments, table, files, summary = first_call
    assert segments, "the tiny model labels something in the photo"
    assert all(set(s) == SEGMENT_KEYS for s in segments)
    assert {s["category_name"] for s in segments} <= set(TYPED_NAMES)
    assert all(0 <= s["score"] <= 1 and s["area"] > 0 and isinstance(s["is_thing"], bool) for s in segments)
    # the legend: one entry per segment, "class (score)", and one mask of the shown image's size each
    labels = [a["label"] for a in annotated["annotations"]]
    assert [label.split(" (")[0] for label in labels] == [s["category_name"] for s in segments]
    assert [float(label.split("(")[1][:4]) for label in labels] == [round(s["score"], 2) for s in segments]
    with Image.open(annotated["image"]) as shown, Image.open(PHOTOS[0]) as photo:
        assert shown.size == photo.size  # 640 px: under the display limit, shown as it is
        for a in annotated["annotations"]:
            with Image.open(a["image"]) as mask:
                assert mask.size == photo.size
    assert table["headers"][:3] == ["id", "class", "score"]
    assert [row[:2] for row in table["data"]] == [[s["id"], s["category_name"]] for s in segments]
    assert summary.startswith(f"{len(segments)} segment")


def test_downloads_are_the_three_files_of_predict(first_call, tiny_run, tmp_path):
    """The same files as ``odise-pl predict`` on the same run, vocabulary and classifier."""
    _, segments, _, files, _ = first_call
    stem = PHOTOS[0].stem
    assert [Path(f).name for f in files] == [f"{stem}_panoptic.png", f"{stem}.json", f"{stem}_overlay.png"]
    ids = read_panoptic_png(Path(files[0]))
    record = json.loads(Path(files[1]).read_text())
    with Image.open(PHOTOS[0]) as photo, Image.open(files[2]) as overlay:
        assert ids.shape == (photo.height, photo.width) and overlay.size == photo.size
    assert record["file_name"] == PHOTOS[0].name and record["vocabulary_size"] == len(TYPED_NAMES)
    assert [{k: s[k] for k in SEGMENT_KEYS} for s in record["segments"]] == segments
    assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in segments}
    assert all(int((ids == s["id"]).sum()) == s["area"] for s in segments)
    out = tmp_path / "predict"
    assert (
        main(
            [
                "predict",
                "--ckpt",
                str(tiny_run),
                "--input",
                str(PHOTOS[0]),
                "--out",
                str(out),
                "--vocab",
                TYPED,
                "--no-default-vocab",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    expected = json.loads((out / f"{stem}.json").read_text())
    assert expected["classifier"] == record["classifier"]
    assert expected["segments"] == record["segments"]
    assert (read_panoptic_png(out / f"{stem}_panoptic.png") == ids).all()


def test_a_text_file_gets_a_message_and_the_next_call_works(client, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n")
    message = app_error(client, notes)
    assert "'notes.txt' could not be read as an image" in message and "/tmp" not in message
    _, segments, *_ = segment(client, PHOTOS[1])
    assert all(set(s) == SEGMENT_KEYS for s in segments)


def test_an_empty_vocabulary_needs_a_list_or_the_defaults(client, served):
    message = app_error(client, PHOTOS[0], "  ")
    assert "the vocabulary is empty" in message and "default COCO + ADE20K + LVIS" in message
    _, segments, _, files, _ = segment(client, PHOTOS[0], "", lists=["pascal_voc_21"])
    assert json.loads(Path(files[1]).read_text())["vocabulary_size"] == 21
    _, session = served
    assert len(session.vocabulary("", add_default=True)) == 1316  # what the checkbox adds (not embedded here)
    assert session.vocabulary("dog", add_default=True).names[0] == "dog"


def test_a_vocabulary_of_5000_classes_is_refused_with_the_way_out(client):
    huge = ";".join(f"class {k}" for k in range(5000))
    message = app_error(client, PHOTOS[0], huge)
    assert "5,000 classes" in message and "--max-classes" in message
    assert segment(client, PHOTOS[0], "dog;sky:stuff")[1] is not None


def test_bad_controls_get_messages(client):
    assert "unknown classifier 'best'" in app_error(client, PHOTOS[0], classifier="best")
    assert "alpha=1.5 is outside [0, 1]" in app_error(client, PHOTOS[0], alpha=1.5)
    assert "unknown builtin vocabulary 'nope'" in app_error(client, PHOTOS[0], lists=["nope"])


def test_every_classifier_of_the_config_can_be_chosen(client, served):
    _, session = served
    from odise_pl.config.schema import InferenceConfig, choices_of

    assert session.classifiers == choices_of(InferenceConfig, "classifier")
    scores = {}
    for name in session.classifiers:
        _, segments, _, files, summary = segment(client, PHOTOS[0], classifier=name, alpha=0.4, beta=0.8)
        assert json.loads(Path(files[1]).read_text())["classifier"] == name and f"classifier {name}" in summary
        scores[name] = [s["score"] for s in segments]
    assert len({tuple(v) for v in scores.values()}) > 1, "the classifiers give different scores"
    assert session.predictor.model.inference_cfg.alpha == 0.4


def test_large_images_are_scaled_to_the_pixel_limit(client, served):
    _, session = served
    limit, session.max_pixels = session.max_pixels, 200_000
    try:
        _, segments, _, files, _ = segment(client, PHOTOS[0])
    finally:
        session.max_pixels = limit
    record = json.loads(Path(files[1]).read_text())
    assert record["width"] * record["height"] <= 200_000 and record["width"] > 500  # 640x427 -> 547x365
    assert read_panoptic_png(Path(files[0])).shape == (record["height"], record["width"])


def test_text_embeddings_are_computed_once_per_vocabulary(client, monkeypatch):
    from odise_pl.models.open_vocab.text_bank import TextEmbeddingBank

    encoded: list[int] = []
    real = TextEmbeddingBank._encode
    monkeypatch.setattr(TextEmbeddingBank, "_encode", lambda self, names: encoded.append(len(names)) or real(self, names))
    fresh = [f"thing {uuid.uuid4().hex[:8]};sky:stuff", f"stuff {uuid.uuid4().hex[:8]}:stuff;dog"]
    counts = []
    for vocab in (fresh[0], fresh[0], fresh[1], fresh[0]):
        before = len(encoded)
        segment(client, PHOTOS[1], vocab)
        counts.append(len(encoded) - before)
    assert counts[0] > 0 and counts[2] > 0  # new names: the text encoder runs (trained classifier + CLIP branch)
    assert counts[1] == 0 and counts[3] == 0  # the same vocabulary again, or back to an earlier one: cached


def test_the_app_reached_no_host_but_itself(client, first_call, outbound):
    assert outbound == []


def test_command_line_errors_are_one_line(tmp_path, capsys):
    assert main(["app", "--ckpt", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("odise-pl: error:") and "Traceback" not in err
