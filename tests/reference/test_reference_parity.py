"""Reference parity (issue #14): the official ODISE code's recorded tensors, its released checkpoint format.

The expected values come from code no one here wrote: ``tests/data/reference_fixture`` was produced
by running NVlabs/ODISE itself (see its README). Tolerances are those of
:mod:`odise_pl.reference.verify` (float tensors rel. L2 <= 1e-4, discrete outputs exact but for
pixels at a mask probability of 0.5 within 1e-4).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from odise_pl.cli import main
from odise_pl.reference.fixture import DEFAULT_FIXTURE, build_fixture_model, fixture, split_reference
from odise_pl.reference.key_map import rename
from odise_pl.reference.verify import verify_fixture

REPO = Path(__file__).resolve().parents[2]
LABEL_FILES = (
    "odise_label_tiny_ref.pth",
    "odise_label_tiny_tensors.safetensors",
    "odise_label_tiny_tensors_index.json",
)


@pytest.fixture(scope="module")
def label_model():
    return build_fixture_model(fixture(None, "label"))[0]


def _failures(checks):
    return [f"{c.name}: {c.detail}" for c in checks if not c.ok]


def test_label_fixture_matches_the_reference(label_model):
    checks = verify_fixture(fixture(None, "label"), model=label_model)
    assert len(checks) >= 110 and not _failures(checks)
    names = {c.name for c in checks}
    for name in (
        "inA/crop0/tap2.unet.output_blocks2",
        "inA/crop1/captioner.cond_inputs",
        "inB/backbone.out.s5",
        "inA/predictor.aux0.mask_embed",
        "inB/clip_head.mask_pred_open_logits",
        "inB/final.mask_cls",
        "inA/final.panoptic_seg",
        "inB/segments_info_overlap0",
        "inA/final.instances",
    ):
        assert name in names, name


def _copy_label_fixture(dest: Path) -> Path:
    dest.mkdir()
    for name in LABEL_FILES:
        shutil.copy(DEFAULT_FIXTURE / name, dest / name)
    return dest


def test_verify_reference_fails_naming_a_perturbed_recorded_tensor(tmp_path, label_model):
    from safetensors.torch import load_file, save_file

    folder = _copy_label_fixture(tmp_path / "fx")
    path = folder / "odise_label_tiny_tensors.safetensors"
    tensors = load_file(str(path))
    tensors["inA/backbone.out.s3"] = tensors["inA/backbone.out.s3"] * 1.0002  # 2e-4 relative: beyond 1e-4
    g = torch.Generator().manual_seed(0)
    s5 = tensors["inB/backbone.out.s5"]
    tensors["inB/backbone.out.s5"] = s5 + 2e-4 * s5.norm() / s5.numel() ** 0.5 * torch.randn(s5.shape, generator=g)
    save_file(tensors, str(path))
    bad = _failures(verify_fixture(fixture(folder, "label"), model=label_model))
    assert len(bad) == 2, bad
    assert bad[0].startswith("inA/backbone.out.s3: rel L2 2.0e-04") and bad[1].startswith("inB/backbone.out.s5: rel L2 2.0e-04")


def test_a_recorded_discrete_output_changed_far_from_a_tie_fails(tmp_path, label_model):
    """One pixel of the recorded semantic and panoptic maps, and one instance mask bit, where no decision is near a tie."""
    from safetensors.torch import load_file, save_file

    folder = _copy_label_fixture(tmp_path / "fx")
    path = folder / "odise_label_tiny_tensors.safetensors"
    tensors = load_file(str(path))
    sem = tensors["inA/final.sem_seg"]  # (K, H, W): the pixel with the largest lead of its winner
    top2 = sem.topk(2, 0).values
    y, x = divmod(int((top2[0] - top2[1]).argmax()), sem.shape[-1])
    second = sem[:, y, x].topk(2).indices[1]
    tensors["inA/final.sem_seg_argmax"][y, x] = second.to(torch.int32)
    pan = tensors["inA/final.panoptic_seg"]
    pan[y, x] = 0 if int(pan[y, x]) != 0 else 1
    packed = tensors["inB/final.instances.pred_masks_packbits"]
    packed[0, 10, 3] ^= 0b00010000  # pixel (10, 27) of the first instance's mask
    save_file(tensors, str(path))
    bad = _failures(verify_fixture(fixture(folder, "label"), model=label_model))
    names = [b.split(":")[0] for b in bad]
    assert "inA/final.sem_seg_argmax" in names and "inA/final.panoptic_seg" in names, bad
    assert "inB/final.instances" in names, bad
    assert any("far from any tie" in b or "beyond the tie bound" in b for b in bad)


def test_a_fixture_whose_clip_copies_differ_is_a_clean_error(tmp_path, capsys):
    folder = _copy_label_fixture(tmp_path / "fx")
    path = folder / "odise_label_tiny_ref.pth"
    state = torch.load(path, weights_only=True)
    key = next(k for k in state if k.startswith("clip_head.clip.clip.") and k.endswith("ln_post.weight"))
    state[key] = state[key] + 1
    torch.save(state, path)
    assert main(["verify-reference", "--fixture", str(folder), "--kind", "label"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("odise-pl: error:") and "CLIP copies differ" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_verify_reference_on_cuda_without_a_gpu_is_a_clean_error(capsys):
    assert main(["verify-reference", "--kind", "label", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_strict_fp32_turns_tf32_off_and_restores_it():
    from odise_pl.reference.verify import strict_fp32

    before = (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    try:
        with strict_fp32("cpu"):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.backends.cuda.matmul.allow_tf32 and torch.get_float32_matmul_precision() == "high"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before[0]
        torch.set_float32_matmul_precision(before[1])


def test_the_fixture_model_is_built_on_the_requested_device_with_a_private_clip(label_model):
    from odise_pl.models.clip_model import ClipSpec, load_clip

    assert all(p.device.type == "cpu" for p in label_model.parameters())
    shared = load_clip(ClipSpec("ODISE-tiny-ViT-14", None))  # what any other model of the process gets
    ours = {id(m) for m in label_model.modules()}
    assert id(shared.model) not in ours  # the fixture's CLIP weights never leak into other models


def test_verify_reference_cli_fails_on_a_perturbed_weight(tmp_path, capsys):
    folder = _copy_label_fixture(tmp_path / "fx")
    path = folder / "odise_label_tiny_ref.pth"
    state = torch.load(path, weights_only=True)
    key = "sem_seg_head.predictor.post_mask_embed.pool_proj.1.weight"  # one weight of the mask embedding
    state[key] = state[key].clone()
    state[key][0, 0] += 0.5
    torch.save(state, path)
    assert main(["verify-reference", "--fixture", str(folder), "--kind", "label"]) == 1
    out = capsys.readouterr().out
    assert "FAIL inA/predictor.mask_embed" in out and "FAIL inA/final.mask_pred" not in out  # masks untouched


def _released_at_real_shapes(kind: str) -> dict[str, torch.Tensor]:
    lines = (DEFAULT_FIXTURE / f"odise_{kind}_released_checkpoint_keys_real.txt").read_text().splitlines()
    g = torch.Generator().manual_seed(0)
    state = {}
    for line in lines:
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        state[key] = torch.randn(tuple(eval(shape)), generator=g)
    empty = torch.ones_like(state["criterion.empty_weight"])
    empty[-1] = 0.1
    state["criterion.empty_weight"] = empty
    return state


@pytest.mark.parametrize("kind,keys,elements", [("label", 399, 28_067_009), ("caption", 400, 28_066_755)])
def test_released_checkpoint_at_real_shapes_converts_into_the_real_model(kind, keys, elements):
    from odise_pl.config import load_config
    from odise_pl.models.on_meta import build_on_meta
    from odise_pl.reference.convert import convert_state_dict

    cfg = load_config(str(REPO / "experiments" / f"odise_{kind}_coco.yaml"), [])
    state = _released_at_real_shapes(kind)
    assert len(state) == keys
    converted = convert_state_dict(state, cfg, source=kind)
    for ref_key, value in state.items():  # the values arrive unchanged (q/k/v: the packed rows)
        for target, transform in rename(ref_key, converted):
            assert torch.equal(converted[target], transform(value)), (ref_key, target)
    model = build_on_meta(cfg)
    result = model.load_state_dict(converted, strict=False, assign=True)
    assert not result.unexpected_keys
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert all(not p.is_meta for p in trainable.values())
    assert sum(p.numel() for p in trainable.values()) == elements == sum(v.numel() for v in converted.values())
    assert all(k in trainable for k in converted)


def test_a_wrong_key_or_shape_is_named(tmp_path):
    from odise_pl.config import load_config
    from odise_pl.errors import ConfigError
    from odise_pl.reference.convert import convert_state_dict

    cfg = load_config(str(REPO / "experiments" / "reference" / "odise_label_fixture.yaml"), [])
    released, _ = split_reference(fixture(None, "label").load_state_dict())
    with pytest.raises(ConfigError, match="sem_seg_head.predictor.extra.weight"):
        convert_state_dict({**released, "sem_seg_head.predictor.extra.weight": torch.zeros(1)}, cfg, source="x")
    wrong = dict(released)
    wrong["category_head.text_proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(ConfigError, match=r"category_head.text_proj.weight \(3, 3\)"):
        convert_state_dict(wrong, cfg, source="x")
    missing = dict(released)
    del missing["sem_seg_head.predictor.query_feat.weight"]
    with pytest.raises(ConfigError, match="queries_features"):
        convert_state_dict(missing, cfg, source="x")
    missing = dict(released)
    del missing["sem_seg_head.pixel_decoder.mask_features.weight"]  # named as in the user's file, and ours
    with pytest.raises(
        ConfigError,
        match=r"sem_seg_head\.pixel_decoder\.mask_features\.weight \(odise-pl: "
        r"mask_generator\.pixel_decoder\.mask_projection\.weight\)",
    ):
        convert_state_dict(missing, cfg, source="x")


def test_converted_directory_predicts_without_training_data(tmp_path, capsys):
    released, _ = split_reference(fixture(None, "label").load_state_dict())
    pth = tmp_path / "odise_label_tiny_released.pth"
    torch.save({"model": released, "iteration": 1}, pth)
    out = tmp_path / "converted"
    exp = str(REPO / "experiments" / "reference" / "odise_label_fixture.yaml")
    assert main(["convert-reference", "--odise-ckpt", str(pth), "-c", exp, "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "categories.json", "weights.safetensors"}
    from safetensors import safe_open

    from odise_pl.engine.run_files import SAFETENSORS_KEY, read_categories

    with safe_open(str(out / "weights.safetensors"), "pt") as weights:  # the categories travel with the weights
        metadata = weights.metadata()
    assert SAFETENSORS_KEY in metadata and metadata["source"] == pth.name
    assert json.loads(metadata[SAFETENSORS_KEY])["categories"] == read_categories(out / "categories.json").categories
    assert main(["convert-reference", "--odise-ckpt", str(pth), "-c", exp, "--out", str(out)]) == 2  # never overwritten
    image = REPO / "notebooks" / "data"
    images = sorted(p for p in image.rglob("*.jpg"))[:1]
    assert images, "the notebooks' COCO photos are missing"
    pred = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "--ckpt",
                str(out),
                "--input",
                str(images[0]),
                "--out",
                str(pred),
                "--vocab",
                "person;dog;grass:stuff",
                "--no-default-vocab",
                "--device",
                "cpu",
                "data.eval_short_side=128",
                "data.eval_max_long_side=192",
            ]
        )
        == 0
    ), capsys.readouterr().err
    assert any(pred.iterdir())
    from odise_pl.engine.predictor import Predictor

    predictor = Predictor.from_config_file(None, out, device="cpu")  # the COCO training vocabulary
    assert len(predictor.vocabulary) == 133 and predictor.vocabulary.names[0] == "person"

    # test: only an evaluation set on disk (generated scenes in the COCO panoptic layout, no train split)
    data = tmp_path / "eval_set"
    assert main(["data", "synth", "--out", str(data), "--num-train", "1", "--num-val", "2", "--image-size", "64"]) == 0
    for part in ("train2017", "panoptic_train2017", "annotations/panoptic_train2017.json"):
        target = data / part
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert (
        main(
            [
                "test",
                "--ckpt",
                str(out),
                f"data.root={data}",
                "data.vocabulary=null",
                "data.num_workers=0",
                "data.eval_short_side=64",
                "data.eval_max_long_side=64",
                "trainer.enable_progress_bar=false",
            ]
        )
        == 0
    ), capsys.readouterr().err
    tested = json.loads(next(out.glob("eval_test_*.json")).read_text())["test"]
    assert {"PQ", "mIoU"} <= set(tested) and not (data / "train2017").exists()


def test_stable_diffusion_from_the_original_single_file(tmp_path, label_model):
    """pretrained = an LDM-layout .ckpt (sd-v1-3.ckpt's format), read by diffusers' single-file converters."""
    from odise_pl.config import load_config
    from odise_pl.models.builder import build_model
    from odise_pl.reference.frozen_weights import LDM_PREFIX
    from odise_pl.vocab import load_builtin

    fx = fixture(None, "label")
    ldm = {k[len(LDM_PREFIX) :]: v for k, v in fx.load_state_dict().items() if k.startswith(LDM_PREFIX)}
    ckpt = tmp_path / "tiny-sd-v1.ckpt"
    torch.save({"state_dict": ldm, "global_step": 0}, ckpt)
    cfg = load_config(str(fx.experiment), [f"model.backbone.pretrained={ckpt}"])
    model = build_model(cfg, load_builtin("coco_panoptic_with_prompt_eng").to_categories())
    ours, want = model.backbone.state_dict(), label_model.backbone.state_dict()
    frozen = [k for k in want if k.startswith(("unet.", "vae.", "text_encoder."))]
    assert len(frozen) > 900 and all(torch.equal(ours[k], want[k]) for k in frozen)
    assert torch.equal(model.backbone.empty_text, label_model.backbone.empty_text)  # TextEncoder("") recomputed
    not_sd = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(1)}}, not_sd)
    with pytest.raises(FileNotFoundError, match="LDM"):
        build_model(
            load_config(str(fx.experiment), [f"model.backbone.pretrained={not_sd}"]),
            load_builtin("coco_panoptic_with_prompt_eng").to_categories(),
        )


class TrainerState:
    """A pickled Python object, as a detectron2 trainer state in a checkpoint."""

    milestones = (81944, 88773)


def test_a_checkpoint_with_python_objects_needs_trust_pickle(tmp_path, capsys):
    released, _ = split_reference(fixture(None, "label").load_state_dict())
    pth = tmp_path / "with_trainer_state.pth"
    torch.save({"model": released, "trainer": TrainerState()}, pth)  # not tensors only
    exp = str(REPO / "experiments" / "reference" / "odise_label_fixture.yaml")
    argv = ["convert-reference", "--odise-ckpt", str(pth), "-c", exp]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "--trust-pickle" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main([*argv, "--out", str(tmp_path / "b"), "--trust-pickle"]) == 0
    assert (tmp_path / "b" / "weights.safetensors").is_file()
