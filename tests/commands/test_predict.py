"""``odise-pl predict`` and the Predictor on the real COCO sample images (tiny untrained model)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from odise_pl.cli import main
from odise_pl.data_modules.panoptic_files import read_rgb_image
from odise_pl.formats.coco_panoptic import read_panoptic_png
from odise_pl.vocab import load_builtin, parse_vocabulary
from tests.conftest import SAMPLE

CONFIG = "experiments/quickstart.yaml"
USER_VOCAB = "person,man,woman;dog;laptop,computer;grass:stuff;sky:stuff;wall:stuff"
REAL = sorted((SAMPLE / "images").glob("*.jpg"))
pytestmark = pytest.mark.skipif(not REAL, reason=f"real COCO sample images not found under {SAMPLE}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Overrides pointing at a tiny synthetic set, and a checkpoint of the (perturbed) untrained model."""
    from odise_pl.config import load_config
    from odise_pl.engine.components import build_all

    root = tmp_path_factory.mktemp("predict")
    # transformers' init: its near-silent untrained generator labels something, which the output checks need
    # (initialised as the original Mask2Former, the untrained label model predicts void for every query)
    overrides = [
        f"data.root={root / 'data'}",
        "data.num_train=8",
        "data.num_val=2",
        f"run.root={root / 'runs'}",
        "model.mask_generator.init=transformers",
    ]
    _, model = build_all(load_config(CONFIG, overrides))
    name, param = next(iter(model.mask_generator.named_parameters()))
    with torch.no_grad():
        param.add_(0.25)  # a fresh build differs from the checkpoint: loading must happen
    ckpt = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, root / "model.ckpt")
    return {
        "root": root,
        "overrides": overrides,
        "ckpt": str(root / "model.ckpt"),
        "param": (f"mask_generator.{name}", param.detach().clone()),
    }


_PREDICTORS: dict = {}


def predictor(trained, mode: str):
    from odise_pl.engine.predictor import Predictor

    if mode not in _PREDICTORS:
        _PREDICTORS[mode] = Predictor.from_config_file(
            CONFIG,
            trained["ckpt"],
            [*trained["overrides"], f"model.inference.classifier={mode}"],
            device="cpu",
            vocabulary=parse_vocabulary(USER_VOCAB),
        )
    return _PREDICTORS[mode]


def check_outputs(out_dir, stem: str, names: list[str], size_wh: tuple[int, int]) -> dict:
    """PNG ids == JSON ids, areas/boxes match the PNG, classes from ``names``, original sizes."""
    ids = read_panoptic_png(out_dir / f"{stem}_panoptic.png")
    record = json.loads((out_dir / f"{stem}.json").read_text())
    assert (ids.shape[1], ids.shape[0]) == size_wh == (record["width"], record["height"])
    with Image.open(out_dir / f"{stem}_overlay.png") as overlay:
        assert overlay.size == size_wh and overlay.mode == "RGB"
    segs = record["segments"]
    assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in segs}
    assert len({s["id"] for s in segs}) == len(segs)
    assert sum(s["area"] for s in segs) == int((ids > 0).sum())  # non-overlapping by construction
    for s in segs:
        mask = ids == s["id"]
        assert s["area"] == int(mask.sum())
        ys, xs = np.nonzero(mask)
        assert s["bbox"] == [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        assert 0 <= s["category_id"] < len(names) and s["category_name"] == names[s["category_id"]]
        assert 0.0 <= s["score"] <= 1.0 and isinstance(s["is_thing"], bool)
    return record


@pytest.fixture(scope="module")
def cli_run(trained):
    """One `odise-pl predict` run over the real images + odd formats + a corrupt file."""
    inp, out = trained["root"] / "inputs", trained["root"] / "out"
    inp.mkdir()
    out.mkdir()
    sizes = {}
    for path in REAL:
        shutil.copy(path, inp / path.name)
        with Image.open(path) as im:
            sizes[path.stem] = im.size
    base = Image.open(REAL[0]).convert("RGB").resize((96, 64))
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(inp / "rgba.png")
    base.convert("L").save(inp / "grey.png")
    base.convert("P", palette=Image.ADAPTIVE, colors=16).save(inp / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 96x64, shown rotated by 90 degrees: 64x96
    base.save(inp / "rotated.jpg", exif=exif)
    base.resize((7, 5)).save(inp / "tiny.png")
    sizes.update({"rgba": (96, 64), "grey": (96, 64), "palette": (96, 64), "rotated": (64, 96), "tiny": (7, 5)})
    (inp / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (out / "grey_overlay.png").write_bytes(b"keep me")  # an existing output: never overwritten
    argv = [
        "predict",
        "-c",
        CONFIG,
        "--ckpt",
        trained["ckpt"],
        "--input",
        str(inp),
        "--out",
        str(out),
        "--vocab",
        USER_VOCAB,
        "--no-default-vocab",
        "--device",
        "cpu",
        *trained["overrides"],
        "model.inference.classifier=ensemble",
    ]
    return {"rc": main(argv), "out": out, "sizes": sizes}


def test_cli_outputs_match_and_use_the_vocabulary(cli_run, capsys):
    names = parse_vocabulary(USER_VOCAB).names
    out = cli_run["out"]
    labelled = 0
    for path in REAL:
        record = check_outputs(out, path.stem, names, cli_run["sizes"][path.stem])
        assert record["classifier"] == "ensemble" and record["vocabulary_size"] == len(names)
        labelled += bool(record["segments"])
    assert labelled, "the untrained model still labels something (in at least one photo)"


def test_cli_corrupt_file_fails_the_run_but_not_the_others(cli_run):
    assert cli_run["rc"] == 1
    out = cli_run["out"]
    assert not list(out.glob("broken*"))
    produced = {p.name[: -len("_panoptic.png")] for p in out.glob("*_panoptic.png")}
    assert produced == {p.stem for p in REAL} | {"rgba", "palette", "rotated", "tiny", "grey.1"}


def test_cli_odd_images_work_at_their_original_size(cli_run):
    names = parse_vocabulary(USER_VOCAB).names
    out = cli_run["out"]
    for stem in ("rgba", "palette", "rotated", "tiny"):
        check_outputs(out, stem, names, cli_run["sizes"][stem])
    # the existing grey_overlay.png was kept; grey's outputs went to the next free stem
    assert (out / "grey_overlay.png").read_bytes() == b"keep me"
    assert not (out / "grey.json").exists()
    check_outputs(out, "grey.1", names, cli_run["sizes"]["grey"])


def test_cli_reports_unusable_arguments(trained, tmp_path, capsys):
    argv = [
        "predict",
        "-c",
        CONFIG,
        "--ckpt",
        trained["ckpt"],
        "--out",
        str(tmp_path / "o"),
        "--vocab",
        "cat;;dog",
        "--input",
        str(REAL[0]),
        *trained["overrides"],
    ]
    assert main(argv) == 2
    assert "class entry 2" in capsys.readouterr().err
    argv[argv.index("--vocab") + 1] = "cat"
    argv[argv.index("--input") + 1] = str(tmp_path / "nothing*.jpg")
    assert main(argv) == 2
    assert "no images found" in capsys.readouterr().err


def test_checkpoint_is_loaded(trained):
    pred = predictor(trained, "diffusion")
    name, value = trained["param"]
    torch.testing.assert_close(pred.model.state_dict()[name].cpu(), value)


def test_classifier_modes_run_and_ensemble_differs(trained):
    image = read_rgb_image(REAL[0])
    probs = {}
    for mode in ("diffusion", "clip", "ensemble"):
        pred = predictor(trained, mode)
        assert pred.classifier == {"diffusion": "in_vocab"}.get(mode, mode)  # the old name is an alias
        assert (pred.model.open_vocab is None) == (mode == "diffusion")
        result = pred.predict(image)
        assert result.panoptic.shape == result.semantic.shape == image.shape[:2]
        assert all(s["category_id"] < len(pred.vocabulary) for s in result.segments)
        probs[mode] = result.probs
        torch.testing.assert_close(result.probs.sum(-1), torch.ones(result.probs.shape[0]))
    assert not torch.allclose(probs["ensemble"], probs["diffusion"], atol=1e-4)
    assert not torch.allclose(probs["clip"], probs["diffusion"], atol=1e-4)
    # void probability comes from the trained classifier in every mode
    torch.testing.assert_close(probs["ensemble"][:, -1], probs["diffusion"][:, -1])


def test_one_checkpoint_serves_coco_ade_and_user_vocabularies(trained):
    pred = predictor(trained, "ensemble")
    image = pred.read_image(REAL[1])
    for vocab in (load_builtin("coco_panoptic"), load_builtin("ade20k_150"), parse_vocabulary("giraffe;sofa;sky")):
        pred.set_vocabulary(vocab)
        assert pred.model.eval_text.num_classes == len(vocab) == pred.model.open_vocab.num_classes
        assert pred.model.eval_is_thing.tolist() == vocab.thing_mask(default=True)
        result = pred.predict(image)
        assert result.probs.shape[-1] == len(vocab) + 1
        names = vocab.names
        assert all(s["category_name"] == names[s["category_id"]] for s in result.segments)
        assert all(s["is_thing"] == vocab.thing_mask()[s["category_id"]] for s in result.segments)
    split = pred.model.open_vocab.split  # the synthetic training classes include "sky"
    assert split.mask.tolist() == [False, False, True]
    pred.set_vocabulary(parse_vocabulary(USER_VOCAB))


def test_large_images_are_post_processed_within_budget(trained):
    pred = predictor(trained, "diffusion")
    image = pred.read_image(REAL[0])
    full = pred.predict(image)
    budget, pred.max_mask_elements = pred.max_mask_elements, 24 * 100 * 100
    try:
        small = pred.predict(image)
    finally:
        pred.max_mask_elements = budget
    assert small.panoptic.shape == full.panoptic.shape == image.shape[:2]
    assert sum(s["area"] for s in small.segments) == int((small.panoptic > 0).sum())
    assert (small.panoptic == full.panoptic).mean() > 0.9


def test_vocabulary_file_may_name_a_builtin_list():
    from odise_pl.vocab import build_vocabulary as resolve_vocabulary

    ade = load_builtin("ade20k_150")
    assert resolve_vocabulary(None, "ade20k_150", include_default=False) == ade
    vocab = resolve_vocabulary("zebra crossing", "ade20k_150", include_default=False)
    assert vocab.names == ["zebra crossing", *ade.merge().names]  # user classes first, repeats dropped
