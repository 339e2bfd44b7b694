"""Start-up cost of ``odise-pl`` (issue #17): the import graph, not timing.

Building the parser (``odise-pl --help``) and running ``odise-pl eval panoptic`` must not import
torch or its heavy friends; each command imports its implementation when it runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from odise_pl.cli import build_parser
from odise_pl.commands.lazy_parser import LazyArgumentParser

REPO = Path(__file__).resolve().parents[2]
HEAVY = (
    "torch",
    "torchvision",
    "torchmetrics",
    "lightning",
    "pytorch_lightning",
    "transformers",
    "diffusers",
    "open_clip",
    "timm",
    "spacy",
    "scipy",
    "omegaconf",
)


def loaded_heavy_modules(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; the HEAVY top-level packages it left in sys.modules."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_building_the_parser_and_help_import_nothing_heavy():
    code = (
        "import contextlib, io\nfrom odise_pl.cli import main\n"
        "for argv in (['--help'], ['eval', '--help'], ['eval', 'panoptic', '--help'], ['fit', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n            main(argv)\n        except SystemExit:\n            pass"
    )
    assert loaded_heavy_modules(code) == []
    assert loaded_heavy_modules("import odise_pl") == []


def test_eval_panoptic_runs_without_torch(tmp_path):
    ids = np.array([[1, 1, 2], [1, 2, 2]], dtype=np.uint32)
    for name in ("gt", "pred"):
        (tmp_path / name).mkdir()
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        Image.fromarray(rgb).save(tmp_path / name / "a.png")
        segs = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 2, "iscrowd": 0}]
        (tmp_path / f"{name}.json").write_text(
            json.dumps(
                {
                    "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": segs}],
                    "categories": [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 0}],
                }
            )
        )
    argv = [
        "eval",
        "panoptic",
        "--gt-json",
        str(tmp_path / "gt.json"),
        "--pred-json",
        str(tmp_path / "pred.json"),
        "--out",
        str(tmp_path / "r.json"),
    ]
    assert loaded_heavy_modules(f"from odise_pl.cli import main\nassert main({argv!r}) == 0") == []
    assert json.loads((tmp_path / "r.json").read_text())["PQ"] == 100.0


def test_importing_torchvision_after_odise_pl_runs_the_workaround_first():
    code = (
        "import odise_pl, sys\nodise_pl.install_torchvision_compat()\nimport torchvision\n"
        "assert 'odise_pl._torchvision_compat' in sys.modules"
    )
    assert "torchvision" in loaded_heavy_modules(code)


def test_importing_odise_pl_installs_the_import_hook_only_where_torchvision_is_broken():
    code = (
        "import sys\nbefore = list(sys.meta_path)\nimport odise_pl\n"
        "assert (sys.meta_path != before) == odise_pl.torchvision_ops_broken(), sys.meta_path"
    )
    assert loaded_heavy_modules(code) == []


def test_torchvision_ops_broken_reads_the_builds_without_importing_them(tmp_path):
    from odise_pl.torchvision_hook import torchvision_ops_broken

    torch_dir, vision_dir = tmp_path / "torch", tmp_path / "torchvision"
    for folder, version in ((torch_dir, "2.13.0+cpu"), (vision_dir, "0.28.0+cu130")):
        folder.mkdir()
        (folder / "version.py").write_text(f"__version__ = '{version}'\n")
    assert torchvision_ops_broken(torch_dir, vision_dir)  # no _C library
    (vision_dir / "_C.so").write_bytes(b"")
    assert torchvision_ops_broken(torch_dir, vision_dir)  # a CUDA torchvision beside a CPU torch
    (torch_dir / "version.py").write_text("__version__ = '2.13.0+cu130'\ncuda: Optional[str] = '13.0'\n")
    assert not torchvision_ops_broken(torch_dir, vision_dir)  # matching builds


def test_lazy_sub_commands_get_their_arguments_when_used():
    parser = build_parser()
    args = parser.parse_args(["data", "synth", "--out", "x", "--num-train", "3"])
    from odise_pl.data_modules.synthetic_shapes import run_synth

    assert args.func is run_synth and args.num_train == 3 and args.num_val == 100
    args = parser.parse_args(["eval", "semantic", "--gt-folder", "g", "--pred-folder", "p", "--num-classes", "2", "--ignore-label", "255"])
    assert args.miou_average == "either_present" and args.func.__name__ == "run_semantic"
    lazy = LazyArgumentParser(prog="x", populate=lambda p: p.add_argument("--flag", default=7))
    assert "--flag" in lazy.format_usage() and lazy.populate is None  # populated once, by usage too
    assert lazy.parse_args([]).flag == 7
