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

from odise_pl.callbacks.visualization import PanopticVisualizer
from odise_pl.data_modules.transforms import image_to_tensor, resize_image
from odise_pl.visualization import colorize_panoptic, overlay
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
        self.scalars: dict[str, tuple[float, int]] = {}

    def add_image(self, tag, image, step, dataformats="CHW") -> None:
        assert dataformats == "HWC"
        self.images[tag] = (np.asarray(image), step)

    def add_scalar(self, tag, value, step) -> None:
        self.scalars[tag] = (float(value), step)


def fake_trainer(writer: Writer, step: int = 0):
    return types.SimpleNamespace(sanity_checking=False, is_global_zero=True, global_step=step,
                                 logger=types.SimpleNamespace(experiment=writer))


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from odise_pl.config import load_config
    from odise_pl.predictor import Predictor

    root = tmp_path_factory.mktemp("one_path")
    overrides = [f"data.root={root / 'data'}", "data.num_train=4", "data.num_val=2", f"run.root={root / 'runs'}",
                 "model.mask_generator.init=transformers", "model.inference.classifier=ensemble"]
    torch.manual_seed(0)
    pred = Predictor(load_config(CONFIG, overrides), None, device="cpu", vocabulary=parse_vocabulary(VOCAB))
    torch.manual_seed(1)
    with torch.no_grad():  # an untrained model labels next to nothing: a perturbation gives it segments
        for p in pred.model.mask_generator.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return pred


def test_evaluation_pictures_and_predictor_give_identical_segments(predictor):
    model = predictor.model
    rng = np.random.default_rng(0)
    h0, w0 = 50, 70   # resized to 128 x 179, padded to a multiple of the backbone's size divisibility
    image = np.kron(rng.integers(0, 256, (5, 7, 3)), np.ones((10, 10, 1))).astype(np.uint8)
    pred = predictor.predict(image)

    # the batch evaluation sees: the same resize and padding as the Predictor's
    h, w = predictor.resize.output_size(h0, w0)
    d = predictor.size_divisibility
    H, W = -(-h // d) * d, -(-w // d) * d
    assert (h, w) != (H, W), "the test needs an image with padding"
    images = torch.zeros((1, 3, H, W), dtype=torch.uint8)
    images[0, :, :h, :w] = image_to_tensor(resize_image(image, h, w))
    gt = torch.zeros((h0, w0), dtype=torch.int64)
    batch = {"images": images, "image_sizes": torch.tensor([[h, w]]),
             "targets": [{"orig_size": (h0, w0), "gt_panoptic": gt, "gt_segments": [], "gt_semantic": gt}]}

    # the ensemble's CLIP classifier reads the valid area: without the sizes the classes would differ
    with torch.no_grad():
        out = model(images.float())
        with_sizes, _ = model.predict_probs(images, out, batch["image_sizes"])
        padding_included, _ = model.predict_probs(images, out, None)
    assert not torch.allclose(with_sizes, padding_included)

    # 1. evaluation (validation_step -> the metrics' update)
    model.val_pq, model.val_sem, model.val_ap = Recorder(), Recorder(), None
    model.validation_step(batch, 0)
    (ids, segments, _, _), = model.val_pq.calls
    (semantic, _), = model.val_sem.calls
    assert len(segments) >= 2, "the test needs a prediction with several segments"

    # 2. the Predictor
    np.testing.assert_array_equal(pred.panoptic, ids.numpy())
    np.testing.assert_array_equal(pred.semantic, semantic.numpy())
    assert [(s["id"], s["category_id"], s["score"]) for s in pred.segments] == \
        [(s["id"], s["category"], s["score"]) for s in segments if s["area"] > 0]
    torch.testing.assert_close(pred.probs, with_sizes[0].float())

    # 3. the TensorBoard pictures: the prediction panel is drawn from the same segments
    writer = Writer()
    PanopticVisualizer(num_images=1).on_validation_batch_end(fake_trainer(writer), model, None, batch, 0)
    panel, _ = writer.images["val/panoptic_0"]
    img = F.interpolate(images[:, :, :h, :w].float(), size=(h0, w0), mode="bilinear", align_corners=False)[0]
    img = img.clamp(0, 255).byte().permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(panel[:, 2 * w0:], overlay(img, colorize_panoptic(ids, segments)))
