"""Enumerated values and combinations of keys are checked when the config is loaded (issue #15, item 3).

Choices are declared once, next to the field (``schema.choice``); validation reads them from
there, for the schema's sections and for the registered parts' config dataclasses alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from odise_pl import registry
from odise_pl.config import load_config
from odise_pl.config.schema import InferenceConfig, TrainerConfig, choice, choices_of
from odise_pl.errors import ConfigError

# the throw-away parts of conftest.py, as overrides (for files that write their own 'model' section)
PARTS = ["data={name: test_dummy_data}", "model.backbone={name: test_dummy_backbone}", "model.supervision={name: test_dummy_supervision}"]


@dataclass
class ModalBackboneConfig:
    mode: str = choice("fast", ("fast", "exact", "approximate"))
    window: int = 64
    stride: int = 64

    def problems(self) -> list[tuple[str, str]]:
        if self.stride > self.window:
            return [("stride", f"{self.stride} must be at most window ({self.window}).")]
        return []


@dataclass
class BatchedDataConfig:
    batch_size: int = 2
    global_batch_size: int | None = None


@pytest.fixture(scope="module", autouse=True)
def more_parts(dummy_parts):
    registry.BACKBONES.register("test_modal_backbone", config=ModalBackboneConfig)(type("Modal", (), {}))
    registry.DATA_MODULES.register("test_batched_data", config=BatchedDataConfig)(type("Batched", (), {}))


def test_a_mistyped_choice_names_file_line_choices_and_the_closest(write):
    path = write("exp.yaml", "model:\n  inference:\n    classifier: ensmble\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, PARTS)
    message = str(err.value)
    assert "exp.yaml: 'model.inference.classifier' must be one of in_vocab, clip, ensemble (line 3)" in message
    assert "got 'ensmble' (str). Did you mean 'ensemble'?" in message


def test_every_enumerated_schema_field_is_checked_and_all_are_reported_together(write):
    path = write("exp.yaml", "", parts=True)
    overrides = [
        "model.inference.miou_average=gt_presnt",
        "model.speed.attention=flash",
        "trainer.precision=32",
        "trainer.strategy=dpp",
        "trainer.accelerator=cuda",
    ]
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    message = str(err.value)
    assert message.startswith("4 problems in the configuration"), message
    assert "'model.inference.miou_average' must be one of gt_present, either_present" in message
    assert "Did you mean 'gt_present'?" in message
    assert "'model.speed.attention' must be one of sdpa, classic" in message
    assert "got 32 (int). Did you mean '32-true'?" in message  # a number where a string is named
    assert "'trainer.strategy' must be one of auto, ddp, fsdp" in message and "Did you mean 'ddp'?" in message


def test_a_value_reached_through_an_interpolation_is_checked_once_resolved(write):
    path = write("exp.yaml", "run: {name: bf16-mixd}\ntrainer: {precision: '${run.name}'}\n", parts=True)
    with pytest.raises(
        ConfigError,
        match=r"'trainer.precision' must be one of .* got 'bf16-mixd' \(str\)\. "
        r"Did you mean 'bf16-mixed'\?",
    ):
        load_config(path)
    good = write("good.yaml", "run: {name: bf16-mixed}\ntrainer: {precision: '${run.name}'}\n", parts=True)
    assert load_config(good).trainer.precision == "bf16-mixed"


def test_a_registered_part_declares_its_choices_and_rules_the_same_way(write):
    body = "data: {name: test_dummy_data}\nmodel:\n  supervision: {name: test_dummy_supervision}\n"
    path = write("exp.yaml", body + "  backbone: {name: test_modal_backbone, mode: exat}\n")
    with pytest.raises(
        ConfigError,
        match=r"'model.backbone.mode' must be one of fast, exact, approximate "
        r"\(line 4\), got 'exat' \(str\)\. Did you mean 'exact'\?",
    ):
        load_config(path)
    path = write("rule.yaml", body + "  backbone: {name: test_modal_backbone, stride: 128}\n")
    with pytest.raises(
        ConfigError,
        match=r"rule.yaml: 'model.backbone.stride' \(line 4\): 128 must be at "
        r"most window \(64\)",
    ):
        load_config(path)
    assert load_config(path, ["model.backbone.window=128"]).model.backbone.stride == 128


def test_cross_key_rules_are_config_errors_naming_the_key(write):
    path = write("exp.yaml", "model:\n  speed: {frozen_weights: true}\n")
    with pytest.raises(
        ConfigError,
        match=r"exp.yaml: 'model.speed.frozen_weights' \(line 2\): true stores the "
        r"frozen weights in bf16.*set model.speed.frozen_autocast: true",
    ):
        load_config(path, PARTS)
    assert load_config(path, [*PARTS, "model.speed.frozen_autocast=true"]).model.speed.frozen_weights

    overrides = [
        "model.mask_generator.mask_dim=64",
        "model.inference.beta=1.5",
        "model.inference.clip_prompt_templates=['a {} b {}']",
        "trainer.accumulate_grad_batches=2",
    ]
    with pytest.raises(ConfigError) as err:
        load_config(
            write(
                "ok.yaml",
                "data: {name: test_batched_data, global_batch_size: 8}\n"
                "model: {backbone: {name: test_dummy_backbone}, "
                "supervision: {name: test_dummy_supervision}}\n",
            ),
            overrides,
        )
    message = str(err.value)
    assert message.startswith("4 problems"), message
    for expected in (
        "'model.mask_generator.mask_dim': 64 must equal model.mask_generator.hidden_dim (256)",
        "'model.inference.beta': 1.5 is outside [0, 1]",
        "'model.inference.clip_prompt_templates': 'a {} b {}' must contain '{}' exactly once",
        "'trainer.accumulate_grad_batches': 2 contradicts data.global_batch_size=8",
    ):
        assert expected in message, expected


def test_choices_are_read_back_from_the_field_and_defaults_must_be_among_them():
    assert choices_of(InferenceConfig, "classifier") == ("in_vocab", "clip", "ensemble")
    assert "bf16-mixed" in choices_of(TrainerConfig, "precision")
    assert choices_of(TrainerConfig, "max_steps") == ()
    from odise_pl.metrics.semantic_iou import AVERAGES
    from odise_pl.models.open_vocab.ensemble import MODES

    assert MODES == choices_of(InferenceConfig, "classifier")  # the runtime reads the one list
    assert AVERAGES == choices_of(InferenceConfig, "miou_average")
    with pytest.raises(ValueError, match="'slow' is not one of the choices"):
        choice("slow", ("fast", "exact"))
