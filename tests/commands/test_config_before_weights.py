"""A typo in a config fails before CLIP or Stable Diffusion is built (issue #15, item 3).

The CLIP and UNet constructors and ``build_model`` are replaced by recorders that fail the
test if they run; ``odise-pl fit`` and ``odise-pl sweep`` must then stop with exit code 2,
the key and the suggestion, without calling any of them.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from odise_pl.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "experiments" / "odise_label_tiny.yaml"


@pytest.fixture
def constructor_calls(monkeypatch) -> list[str]:
    """Names of the heavy constructors called (each raises, so nothing is built either)."""
    import open_clip
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from odise_pl.models import builder, clip_model

    calls: list[str] = []

    def recorder(name):
        def called(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} ran before the config was checked")

        return called

    monkeypatch.setattr(open_clip, "create_model", recorder("open_clip.create_model"))
    monkeypatch.setattr(UNet2DConditionModel, "__init__", recorder("UNet2DConditionModel"))
    monkeypatch.setattr(AutoencoderKL, "__init__", recorder("AutoencoderKL"))
    for module_name in ("odise_pl.engine.components", "odise_pl.engine.weights"):  # the modules holding build_model
        importlib.import_module(module_name)
    originals = {"build_model": builder.build_model, "load_clip": clip_model.load_clip}
    for name, original in originals.items():
        for module in [m for key, m in sys.modules.items() if key.startswith("odise_pl") and m is not None]:
            if getattr(module, name, None) is original:
                monkeypatch.setattr(module, name, recorder(name))
    return calls


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "odise-pl: error: " in err, err
    message = err[err.index("odise-pl: error: ") :]
    assert "Traceback" not in message, message
    return message


def test_fit_with_a_mistyped_classifier_exits_2_before_any_weights(constructor_calls, capsys, tmp_path):
    code = main(["fit", "-c", str(TINY), "model.inference.classifier=ensmble", f"run.root={tmp_path / 'runs'}"])
    message = _error(capsys)
    assert code == 2
    assert (
        "override 'model.inference.classifier=ensmble': 'model.inference.classifier' must be one of in_vocab, clip, ensemble" in message
    ), message
    assert "Did you mean 'ensemble'?" in message, message
    assert constructor_calls == []
    assert not (tmp_path / "runs").exists()


def test_fit_with_a_bad_combination_exits_2_before_any_weights(constructor_calls, capsys, tmp_path):
    code = main(
        ["fit", "-c", str(TINY), "model.speed.frozen_weights=true", "model.backbone.caption_mode=captoin", f"run.root={tmp_path / 'runs'}"]
    )
    message = _error(capsys)
    assert code == 2 and constructor_calls == []
    assert "'model.backbone.caption_mode' must be one of implicit, empty, caption" in message, message
    assert "Did you mean 'caption'?" in message, message

    code = main(["fit", "-c", str(TINY), "model.speed.frozen_weights=true", f"run.root={tmp_path / 'runs'}"])
    message = _error(capsys)
    assert code == 2 and constructor_calls == []
    assert "'model.speed.frozen_weights'" in message and "model.speed.frozen_autocast: true" in message, message


def test_a_sweep_checks_every_run_before_the_first_trains(constructor_calls, capsys, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"base: {TINY}\noverrides: [run.root={tmp_path / 'runs'}]\ngrid:\n  model.inference.classifier: [diffusion, clip, ensmble]\n"
    )
    code = main(["sweep", "-c", str(sweep)])
    message = _error(capsys)
    assert code == 2 and constructor_calls == []
    assert "run 'classifier=ensmble' (3/3)" in message, message
    assert "Did you mean 'ensemble'?" in message, message
    assert not (tmp_path / "runs").exists()


def test_an_import_that_fails_exits_2_naming_the_yaml_and_the_module(constructor_calls, capsys, tmp_path):
    (tmp_path / "broken_parts.py").write_text("import torch\n\nraise ImportError('needs a newer torch')\n")
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"_base_: {TINY}\nimports: [broken_parts.py]\n")
    code = main(["fit", "-c", str(exp), f"run.root={tmp_path / 'runs'}"])
    message = _error(capsys)
    assert code == 2 and constructor_calls == []
    assert (
        "exp.yaml (line 2): importing '" in message and "broken_parts.py' failed: ImportError: needs a newer torch (raised at " in message
    ), message
    assert "Fix that module, or remove it from 'imports'." in message, message
