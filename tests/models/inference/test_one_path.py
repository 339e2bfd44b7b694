"""Evaluation, the TensorBoard pictures and the Predictor segment alike (one post-processing path).

One tiny quickstart model (CLIP backbone, ``classifier: ensemble``: the CLIP mask classifier sees each
image's valid area), one image whose valid size is smaller than its padded input.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from odise_pl.callbacks.drawing import colorize_panoptic, overlay
from odise_pl.callbacks.visualization import PanopticVisualizer
from odise_pl.data_modules.transforms import image_to_tensor, resize_image
from odise_pl.vocab import parse_vocabulary

CONFIG = "experiments/quickstart.yaml"
VOCAB = "circle,disc;square;triangle;background:stuff"


class Recorder(torch.nn.Module):
    """Stands in for a metric: keeps what ``update`` got."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def update(self, *args) -> None:
        self.calls.append(args)


class Writer:
    """Stands in for TensorBoard's SummaryWriter."""

    def __init__(self) -> None:
        self.images: dict[str, tuple[np.ndarray, int]] = {}
        self.logged: list[tuple[str, int]] = []

    def add_image(self, tag, image, step, dataformats="CHW") -> None:
        assert dataformats == "HWC"
        self.images[tag] = (np.asarray(image), step)
        self.logged.append((tag, step))


def fake_trainer(writer: Writer, step: int = 0):
    return types.SimpleNamespace(
        sanity_checking=False, is_global_zero=True, global_step=step, logger=types.SimpleNamespace(experiment=writer)
    )


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from odise_pl.config import load_config
    from odise_pl.engine.predictor import Predictor

    root = tmp_path_factory.mktemp("one_path")
    overrides = [
        f"data.root={root / 'data'}",
        "data.num_train=4",
        "data.num_val=2",
        f"run.root={root / 'runs'}",
        "model.mask_generator.init=transformers",
        "model.inference.classifier=ensemble",
    ]
    from odise_pl.models import clip_model

    with pytest.MonkeyPatch.context() as mp:  # a CLIP of this seed, not one an earlier test cached
        mp.setattr(clip_model, "_CACHE", {})
        torch.manual_seed(0)
        pred = Predictor(load_config(CONFIG, overrides), None, device="cpu", vocabulary=parse_vocabulary(VOCAB))
    torch.manual_seed(1)
    with torch.no_grad():  # an untrained model labels next to nothing: a perturbation gives it segments
        for p in pred.model.mask_generator.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return pred


def blocks_image(h0: int = 50, w0: int = 70) -> np.ndarray:
    """(h0, w0, 3) uint8 blocks of random colours."""
    rng = np.random.default_rng(0)
    return np.kron(rng.integers(0, 256, (h0 // 10, w0 // 10, 3)), np.ones((10, 10, 1))).astype(np.uint8)


def padded_batch(predictor, image: np.ndarray, gt_category: int = 0):
    """The batch evaluation would see (the Predictor's resize and padding); ground truth: one stuff segment."""
    h0, w0 = image.shape[:2]
    h, w = predictor.resize.output_size(h0, w0)
    d = predictor.size_divisibility
    H, W = -(-h // d) * d, -(-w // d) * d
    assert (h, w) != (H, W), "the test needs an image with padding"
    assert h * w > 0
    images = torch.zeros((1, 3, H, W), dtype=torch.uint8)
    images[0, :, :h, :w] = image_to_tensor(resize_image(image, h, w))
    segments = [{"id": 1, "category": gt_category, "isthing": False, "iscrowd": False, "area": h0 * w0}]
    target = {
        "orig_size": (h0, w0),
        "gt_panoptic": torch.ones((h0, w0), dtype=torch.int64),
        "gt_segments": segments,
        "gt_semantic": torch.full((h0, w0), gt_category, dtype=torch.int64),
        "masks": torch.ones((1, H, W), dtype=torch.bool),
        "labels": torch.tensor([gt_category]),
        "is_thing": torch.tensor([False]),
    }
    return {"images": images, "image_sizes": torch.tensor([[h, w]]), "targets": [target]}


def test_evaluation_pictures_and_predictor_give_identical_segments(predictor):
    model = predictor.model
    image = blocks_image()  # resized to 128 x 179, padded to a multiple of the size divisibility
    h0, w0 = image.shape[:2]
    pred = predictor.predict(image)
    batch = padded_batch(predictor, image)
    images, (h, w) = batch["images"], batch["image_sizes"][0].tolist()

    # the ensemble's CLIP classifier reads the valid area: without the sizes the classes would differ
    with torch.no_grad():
        out = model(images.float())
        with_sizes, _ = model.predict_probs(images, out, batch["image_sizes"])
        padding_included, _ = model.predict_probs(images, out, None)
    assert not torch.allclose(with_sizes, padding_included)

    # 1. evaluation (validation_step -> the metrics' update)
    model.val_pq, model.val_sem, model.val_ap = Recorder(), Recorder(), None
    model.validation_step(batch, 0)
    ((ids, segments, _, _),) = model.val_pq.calls
    ((semantic, _),) = model.val_sem.calls
    assert len(segments) >= 2, "the test needs a prediction with several segments"

    # 2. the Predictor
    np.testing.assert_array_equal(pred.panoptic, ids.numpy())
    np.testing.assert_array_equal(pred.semantic, semantic.numpy())
    assert [(s["id"], s["category_id"], s["score"]) for s in pred.segments] == [
        (s["id"], s["category"], s["score"]) for s in segments if s["area"] > 0
    ]
    torch.testing.assert_close(pred.probs, with_sizes[0].float())

    # 3. the TensorBoard pictures: the prediction panel is drawn from the same segments
    writer = Writer()
    PanopticVisualizer(num_images=1).on_validation_batch_end(fake_trainer(writer), model, None, batch, 0)
    panel, _ = writer.images["val/panoptic_0"]
    img = F.interpolate(images[:, :, :h, :w].float(), size=(h0, w0), mode="bilinear", align_corners=False)[0]
    img = img.clamp(0, 255).byte().permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(panel[:, 2 * w0 :], overlay(img, colorize_panoptic(ids, segments)))


def test_training_pictures_every_n_steps(predictor):
    model = predictor.model.train()
    batch = padded_batch(predictor, blocks_image(), gt_category=3)
    writer = Writer()
    callback = PanopticVisualizer(num_images=1, every_n_steps=3)
    for step in [0, 1, 2, 3, 3, 4, 5, 6, 7]:  # step 3 twice: two micro-batches of one accumulated step
        callback.on_train_batch_end(fake_trainer(writer, step), model, None, batch, 0)
    assert writer.logged == [("train/panoptic_0", 3), ("train/panoptic_0", 6)]
    assert model.training, "the model is back in training mode"
    h, w = batch["image_sizes"][0].tolist()
    panel, _ = writer.images["train/panoptic_0"]
    assert panel.shape == (h, 3 * w, 3)  # image | ground truth | prediction at the valid size

    # no explicit interval: logging.vis_every_n_steps of the module's config
    model.hparams.config["logging"]["vis_every_n_steps"] = 4
    assert PanopticVisualizer(num_images=1).training_interval(model) == 4
    assert PanopticVisualizer(num_images=1, every_n_steps=0).training_interval(model) == 0


def test_log_per_class_writes_per_class_scores_to_tensorboard(predictor, tmp_path):
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = predictor.model
    predictor.set_vocabulary(VOCAB)  # fresh metrics
    batch = padded_batch(predictor, blocks_image(), gt_category=3)
    model.hparams.config["logging"]["log_per_class"] = True
    try:
        trainer = L.Trainer(
            accelerator="cpu",
            logger=TensorBoardLogger(str(tmp_path), name="tb", version=""),
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
        expected = {}
        pq, sem = model.val_pq, model.val_sem
        original = model.per_class_metrics

        def spy(stage, pq_, sem_):
            expected.update(original(stage, pq_, sem_))
            return expected

        model.per_class_metrics = spy
        trainer.validate(model, dataloaders=DataLoader([batch], batch_size=None), verbose=False)
    finally:
        model.hparams.config["logging"]["log_per_class"] = False
        del model.per_class_metrics
    assert pq is model.val_pq and sem is model.val_sem
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    # the ground-truth class 3 is seen by both metrics; only seen classes appear
    assert {"val_per_class/PQ/3", "val_per_class/SQ/3", "val_per_class/RQ/3", "val_per_class/IoU/3"} <= tags
    assert set(expected) == {t for t in tags if "_per_class/" in t}
    for tag, value in expected.items():
        assert events.Scalars(tag)[-1].value == pytest.approx(value, abs=1e-4)
        assert 0.0 <= value <= 100.0
