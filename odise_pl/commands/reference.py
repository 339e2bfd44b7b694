"""``odise-pl convert-reference`` and ``odise-pl verify-reference``: the released ODISE / FC-CLIP checkpoints.

::

    odise-pl convert-reference --odise-ckpt odise_label_coco_50e-b67d2efc.pth \\
        -c experiments/odise_label_coco.yaml --out runs/odise_label_coco_50e [key=value ...]
    odise-pl convert-reference --fcclip-ckpt fcclip_cocopan.pth -c experiments/fcclip_coco.yaml \\
        --out runs/fcclip_cocopan
    odise-pl verify-reference [--fixture DIR] [--kind label|caption|fcclip|all] [--device cpu|cuda]

``verify-reference`` builds the reference fixture's tiny models through the conversion path,
runs them on the fixture's two inputs and prints every recorded tensor's error; it exits 0 only
when all are within tolerance (run it after upgrading torch / diffusers / transformers / open_clip).
"""

from __future__ import annotations

import argparse


def cmd_convert(args: argparse.Namespace) -> int:
    from odise_pl.config import load_config
    from odise_pl.reference.convert import convert_reference

    cfg = load_config(args.config, args.overrides)
    if args.fcclip_ckpt:
        from odise_pl.reference.fcclip_convert import convert_fcclip

        out, note = convert_fcclip(args.fcclip_ckpt, cfg, args.out, trust_pickle=args.trust_pickle)
        print(note)
    else:
        out = convert_reference(args.odise_ckpt, cfg, args.out, trust_pickle=args.trust_pickle)
    print(
        f"converted {args.odise_ckpt or args.fcclip_ckpt} -> {out} (config.yaml, categories.json, "
        "weights.safetensors)\n"
        f"  odise-pl predict --ckpt {out} --input IMAGES --vocab 'cat;dog' --out OUT\n"
        f"  odise-pl test --ckpt {out} --sets config ade20k_panoptic"
    )
    return 0


def _verify_kind(kind: str, folder: str | None, device: str):
    """(fixture, checks) of one fixture kind: ODISE's ``label`` / ``caption`` or ``fcclip``."""
    if kind == "fcclip":
        from odise_pl.reference.fcclip_fixture import fcclip_fixture
        from odise_pl.reference.fcclip_verify import verify_fcclip

        fx = fcclip_fixture(folder)
        return fx, verify_fcclip(fx, device=device)
    from odise_pl.reference.fixture import fixture
    from odise_pl.reference.verify import verify_fixture

    fx = fixture(folder, kind)
    return fx, verify_fixture(fx, device=device)


def cmd_verify(args: argparse.Namespace) -> int:
    from odise_pl.reference.checks import REL_TOL
    from odise_pl.reference.fixture import KINDS

    kinds = (*KINDS, "fcclip") if args.kind == "all" else (args.kind,)
    failed = 0
    report: dict = {"device": args.device, "kinds": {}}
    for kind in kinds:
        fx, checks = _verify_kind(kind, args.fixture, args.device)
        print(
            f"{kind} fixture ({fx.weights}) on {args.device} (float32, TF32 off): {len(checks)} checks, "
            f"float tolerance rel. L2 <= {REL_TOL:g}, discrete outputs by the tie rule"
        )
        for check in checks:
            if not check.ok or args.verbose:
                print(f"  {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
        bad = [c for c in checks if not c.ok]
        failed += len(bad)
        print(f"  {len(checks) - len(bad)} passed, {len(bad)} failed")
        report["kinds"][kind] = {
            "passed": len(checks) - len(bad),
            "failed": len(bad),
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
        }
    if args.json:
        import json

        from odise_pl.atomic_files import write_new

        print(f"wrote {write_new(args.json, json.dumps(report, indent=1))}")
    return 1 if failed else 0


def add_parser(sub) -> None:
    p = sub.add_parser("convert-reference", help="a released ODISE or FC-CLIP .pth -> an odise-pl run directory")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--odise-ckpt", help="ODISE's released checkpoint (detectron2 .pth)")
    which.add_argument("--fcclip-ckpt", help="FC-CLIP's released fcclip_cocopan.pth (no CLIP weights inside)")
    p.add_argument(
        "-c", "--config", required=True, help="its experiment, e.g. experiments/odise_label_coco.yaml or experiments/fcclip_coco.yaml"
    )
    p.add_argument("--out", required=True, help="the run directory to write (must not exist yet)")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow Python objects in the .pth (unpickling runs the file's code: trusted files only)",
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.backbone.pretrained=DIR")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("verify-reference", help="check the model against the official code's recorded tensors")
    p.add_argument(
        "--fixture", default=None, help="fixture folder (default: the project's tests/data copy: reference_fixture, fcclip_fixture)"
    )
    p.add_argument(
        "--kind",
        default="all",
        choices=("label", "caption", "fcclip", "all"),
        help="ODISE's label / caption fixture, FC-CLIP's, or all three (default)",
    )
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda: where the fixture models run (float32, TF32 off)")
    p.add_argument("--json", default=None, help="also write every check to this JSON file (never overwritten)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every check, not only failures")
    p.set_defaults(func=cmd_verify)
