"""``odise-pl data check``: each problem planted in a broken copy of ``examples/custom_dataset`` is found
and names its file; all of them are listed at once; exit 0 / 1 / 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odise_pl.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "custom_dataset"
A, B = "000000142238", "000000439180"


@pytest.fixture()
def example(tmp_path) -> Path:
    """A fresh copy of the example set (semantic and panoptic ground truth of the two COCO photos)."""
    shutil.copytree(EXAMPLE, tmp_path / "set")
    return tmp_path / "set"


def check(capsys, target: Path) -> tuple[int, list[str]]:
    """Run ``odise-pl data check target``; (exit status, problem lines without the summary)."""
    capsys.readouterr()
    rc = main(["data", "check", str(target)])
    lines = capsys.readouterr().out.strip().splitlines()
    return rc, lines[:-1]


def edit_png(path: Path, change) -> None:
    array = np.asarray(Image.open(path)).copy()
    Image.fromarray(change(array)).save(path)


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# ----------------------------------------------------------------------------- semantic
def plant_missing_image(root: Path, stem: str = A) -> tuple[Path, str]:
    (root / "images" / f"{stem}.jpg").unlink()
    return root / "labels" / f"{stem}.png", "missing image"


def plant_missing_label(root: Path, stem: str = B) -> tuple[Path, str]:
    (root / "labels" / f"{stem}.png").unlink()
    return root / "images" / f"{stem}.jpg", "missing label"


def plant_size_mismatch(root: Path, stem: str = B) -> tuple[Path, str]:
    label = root / "labels" / f"{stem}.png"
    Image.open(label).crop((0, 0, 100, 80)).save(label)
    return label, "size mismatch"


def plant_label_values(root: Path, stem: str = A) -> tuple[Path, str]:
    label = root / "labels" / f"{stem}.png"

    def paint(a):
        a[:3, :3], a[5, 5] = 7, 254  # five classes (0..4) and ignore 255: 7 and 254 are outside
        return a

    edit_png(label, paint)
    return label, "label values"


def plant_unreadable_image(root: Path, stem: str = B) -> tuple[Path, str]:
    image = root / "images" / f"{stem}.jpg"
    image.write_bytes(image.read_bytes()[:300])  # truncated
    return image, "unreadable"


SEMANTIC = [plant_missing_image, plant_missing_label, plant_size_mismatch, plant_label_values]


def test_the_example_set_is_clean(capsys):
    for target in (EXAMPLE, EXAMPLE / "semantic.yaml", EXAMPLE / "panoptic.yaml"):
        capsys.readouterr()
        assert main(["data", "check", str(target)]) == 0
        assert capsys.readouterr().out.strip() == f"{target}: 2 items read, no problems."


@pytest.mark.parametrize("plant", [*SEMANTIC, plant_unreadable_image], ids=lambda f: f.__name__[6:])
def test_each_semantic_problem_is_found_and_names_its_file(example, capsys, plant):
    path, kind = plant(example)
    rc, problems = check(capsys, example / "semantic.yaml")
    assert rc == 1
    assert problems == [problems[0]] and problems[0].startswith(f"{path}: {kind}: "), problems
    if kind == "label values":
        assert "7, 254 (10 pixels) outside the vocabulary's classes 0..4 and not the ignore label 255" in problems[0]


def test_every_semantic_problem_is_listed_at_once(example, capsys):
    for k in range(len(SEMANTIC)):  # one copy of the first photo per problem
        shutil.copy(example / "images" / f"{A}.jpg", example / "images" / f"copy{k}.jpg")
        shutil.copy(example / "labels" / f"{A}.png", example / "labels" / f"copy{k}.png")
    planted = {plant(example, f"copy{k}") for k, plant in enumerate(SEMANTIC)}
    (example / "labels" / "extra_gt.png").write_bytes(b"")  # a label without an image
    rc, problems = check(capsys, example / "semantic.yaml")
    found = {(Path(line.split(": ")[0]), line.split(": ")[1]) for line in problems}
    assert rc == 1 and planted | {(example / "labels" / "extra_gt.png", "missing image")} == found, problems


def test_label_values_need_the_vocabulary(example, capsys):
    (example / "vocabulary.txt").write_text("person\nhorse\n")  # two classes: 2..4 are now outside
    rc, problems = check(capsys, example)  # the folder form: dataset custom's default layout
    assert rc == 1 and {line.split(": ")[:2][1] for line in problems} == {"label values"}
    assert len(problems) == 2 and all("2, 3, 4" in line for line in problems)


# ----------------------------------------------------------------------------- panoptic
def plant_unknown_segment_id(root: Path) -> tuple[Path, str]:
    png = root / "panoptic" / f"{B}.png"

    def paint(a):
        a[0, 0] = (99, 0, 0)
        return a

    edit_png(png, paint)
    return png, "unknown segment id"


def plant_duplicate_segment_id(root: Path) -> tuple[Path, str]:
    def duplicate(data):
        segments = data["annotations"][0]["segments_info"]
        segments.append(dict(segments[0]))

    edit_json(root / "panoptic.json", duplicate)
    return root / "panoptic.json", "duplicate id"


def plant_missing_panoptic_png(root: Path) -> tuple[Path, str]:
    (root / "panoptic" / f"{A}.png").unlink()
    return root / "panoptic" / f"{A}.png", "missing label"


def plant_json_size_mismatch(root: Path) -> tuple[Path, str]:
    edit_json(root / "panoptic.json", lambda data: data["images"][1].update(height=181))
    return root / "panoptic" / f"{B}.png", "size mismatch"


PANOPTIC = [plant_unknown_segment_id, plant_duplicate_segment_id, plant_missing_panoptic_png, plant_json_size_mismatch]


@pytest.mark.parametrize("plant", PANOPTIC, ids=lambda f: f.__name__[6:])
def test_each_panoptic_problem_is_found_and_names_its_file(example, capsys, plant):
    path, kind = plant(example)
    rc, problems = check(capsys, example / "panoptic.yaml")
    assert rc == 1 and len(problems) == 1 and problems[0].startswith(f"{path}: {kind}: "), problems


def test_every_panoptic_problem_is_listed_at_once(example, capsys):
    planted = {plant(example) for plant in PANOPTIC}
    edit_json(example / "panoptic.json", lambda data: data["images"].append(dict(data["images"][0])))
    planted.add((example / "panoptic.json", "duplicate id"))  # the image id, a second line
    rc, problems = check(capsys, example / "panoptic.yaml")
    assert rc == 1 and len(problems) == 5
    assert {(Path(line.split(": ")[0]), line.split(": ")[1]) for line in problems} == planted
    assert any("image id 142238 listed more than once" in line for line in problems)


def test_a_synonyms_file_of_the_wrong_length_is_named(example, capsys):
    (example / "synonyms.txt").write_text("1:person\n2:horse\n")
    rc, problems = check(capsys, example / "panoptic.yaml")
    assert rc == 1 and problems[0].startswith(f"{example / 'synonyms.txt'}: vocabulary: ")


def test_a_set_that_cannot_be_named_is_an_error_line(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().err.startswith(f"odise-pl: error: set file {tmp_path / 'none.yaml'} does not exist")
    (tmp_path / "bad.yaml").write_text("data:\n  name: semantic_seg\n  dataset: custom\n  label_sufix: .png\n")
    assert main(["data", "check", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: unknown key 'data.label_sufix' (line 4). Did you mean 'data.label_suffix'?" in err
    assert main(["data", "check", str(tmp_path / "no_such_folder")]) == 2
    assert "no_such_folder: neither a set file (.yaml / .yml), an existing folder nor a builtin set" in capsys.readouterr().err
