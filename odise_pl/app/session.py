"""The model side of the web demo: one :class:`~odise_pl.engine.predictor.Predictor`, loaded once,
answering the page's requests one at a time (no Gradio here: :mod:`odise_pl.app.page` is the page).

A request is an image file, a vocabulary (``predict``'s syntax, builtin lists, the default
vocabulary), a classifier and CLIP's ensemble weights. The answer is the
:class:`~odise_pl.engine.predictor.Prediction` and the three files ``odise-pl predict`` writes
(:func:`~odise_pl.engine.prediction_files.write_outputs`), in a folder of their own.

Every classifier of ``model.inference.classifier`` can be chosen per request, so the model is built
with the CLIP branch (``classifier=ensemble``) and switched to the run's own classifier at once
(:meth:`~odise_pl.models.odise_module.OdiseModule.set_classifier`): nothing here depends on the method.

Text embeddings are computed once per vocabulary: a request with the vocabulary of the previous one
leaves the model as it is, and the text bank keeps every vocabulary it embedded on disk
(:mod:`odise_pl.models.open_vocab.text_bank`), so going back to an earlier one runs no text encoder.

Bad input raises an :class:`~odise_pl.errors.OdiseError` whose message is meant for the page: an
unreadable image, an empty vocabulary, one over ``max_classes`` classes, an unknown classifier or
weights outside [0, 1]. An image over ``max_pixels`` is scaled down first (a note says so), which keeps
the post-processing and the three files within memory; the Predictor keeps its own budgets.
"""

from __future__ import annotations

import itertools
import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from odise_pl.errors import ConfigError, DatasetError, VocabularyError

#: the most classes one request may ask for (the default vocabulary has 1,316)
DEFAULT_MAX_CLASSES = 3000
#: images with more pixels are scaled down before segmentation (16.8 MP, e.g. 4096 x 4096)
DEFAULT_MAX_PIXELS = 4096 * 4096
#: result folders kept on disk (older ones are deleted; the page holds its own copies)
KEEP_RESULTS = 16


@dataclass
class Segmentation:
    """The answer to one request.

    Attributes:
        prediction: the :class:`~odise_pl.engine.predictor.Prediction` (at the segmented size).
        files: the panoptic PNG, the JSON and the overlay (``predict``'s three files).
        class_names: the vocabulary's display names (``category_id`` indexes them).
        notes: what the page should tell the user besides the result (e.g. the image was scaled down).
    """

    prediction: object
    files: tuple[Path, Path, Path]
    class_names: list[str]
    notes: list[str] = field(default_factory=list)


class DemoSession:
    """A trained model serving the demo's requests.

    Args:
        predictor: the :class:`~odise_pl.engine.predictor.Predictor` (built with the CLIP branch to
            switch classifiers; see the module docstring).
        default_classifier: the classifier of the run's config (the page's initial choice).
        out_dir: where result folders go (default: a new temporary folder, removed by :meth:`close`).
        max_classes: refuse larger vocabularies (a message says how to raise the limit).
        max_pixels: scale larger images down to this many pixels before segmenting.
    """

    def __init__(
        self,
        predictor,
        *,
        default_classifier: str | None = None,
        out_dir: str | Path | None = None,
        max_classes: int = DEFAULT_MAX_CLASSES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        from odise_pl.config.schema import InferenceConfig, aliases_of, choices_of

        self.predictor = predictor
        self.classifiers: tuple[str, ...] = choices_of(InferenceConfig, "classifier")
        self.aliases = aliases_of(InferenceConfig, "classifier")  # older names scripts may send (diffusion)
        inference = predictor.model.inference_cfg
        self.default_classifier = default_classifier or inference.classifier
        self.default_alpha, self.default_beta = float(inference.alpha), float(inference.beta)
        self.max_classes, self.max_pixels = int(max_classes), int(max_pixels)
        self._own_dir = out_dir is None
        self.out_dir = Path(tempfile.mkdtemp(prefix="odise-pl-app-")) if out_dir is None else Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count()
        self._vocabulary_key: tuple | None = None
        predictor.set_classifier(self.default_classifier)

    @classmethod
    def open(
        cls, ckpt: str | Path, config: str | None = None, overrides: Sequence[str] = (), *, device: str | None = None, **kwargs
    ) -> DemoSession:
        """Load a run directory, ``.ckpt`` or ``.safetensors`` (``config`` None: the run's own config)."""
        from odise_pl.engine.predictor import Predictor
        from odise_pl.engine.run_files import config_for

        configured = str(config_for(ckpt, config, list(overrides)).model.inference.classifier)
        # built with the CLIP branch, which every choice can use (the config is read-only: load it again)
        cfg = config_for(ckpt, config, [*overrides, "model.inference.classifier=ensemble"])
        return cls(Predictor(cfg, ckpt, device=device), default_classifier=configured, **kwargs)

    # ------------------------------------------------------------------ vocabulary
    def vocabulary(self, text: str = "", *, add_default: bool = False, lists: Sequence[str] = ()):
        """The request's :class:`~odise_pl.vocab.Vocabulary`: the typed classes first, then the builtin
        ``lists``, then (``add_default``) the default COCO + ADE20K + LVIS one; repeats dropped."""
        from odise_pl.vocab import default_vocabulary, load_builtin, parse_vocabulary

        parts = [parse_vocabulary(text, name="typed")] if text and text.strip() else []
        parts += [load_builtin(name) for name in lists or ()]
        if add_default:
            parts.append(default_vocabulary())
        if not parts:
            raise VocabularyError(
                "the vocabulary is empty: type classes such as 'cat,kitten;dog;grass:stuff', "
                "pick a builtin list, or tick the default COCO + ADE20K + LVIS vocabulary."
            )
        vocab = parts[0].merge(*parts[1:], name="+".join(p.name for p in parts)) if len(parts) > 1 else parts[0]
        if len(vocab) > self.max_classes:
            raise VocabularyError(
                f"the vocabulary has {len(vocab):,} classes; this app takes at most "
                f"{self.max_classes:,} per request (start it with --max-classes N to allow more, "
                "or use odise-pl predict, which has no limit)."
            )
        return vocab

    def _use_vocabulary(self, vocab) -> None:
        key = (tuple(map(tuple, vocab.synonyms)), tuple(vocab.thing_mask(default=True)))
        if key != self._vocabulary_key:  # unchanged: the model keeps its text embeddings
            self.predictor.set_vocabulary(vocab)
            self._vocabulary_key = key

    # ------------------------------------------------------------------ one request
    def segment(
        self,
        image: str | Path,
        vocabulary: str = "",
        *,
        add_default: bool = False,
        lists: Sequence[str] = (),
        classifier: str | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        name: str | None = None,
    ) -> Segmentation:
        """Segment the image file ``image`` with the request's vocabulary and classifier (see the class).
        ``name``: the file's name as the user knows it (messages and the files' names; default: ``image``'s)."""
        from odise_pl.engine.prediction_files import write_outputs

        vocab = self.vocabulary(vocabulary, add_default=add_default, lists=lists)
        classifier = self.aliases.get(classifier, classifier) if classifier else self.default_classifier
        if classifier not in self.classifiers:
            raise ConfigError(f"unknown classifier '{classifier}': choose one of {', '.join(self.classifiers)}.")
        for key, value in (("alpha", alpha), ("beta", beta)):
            if value is not None and not 0 <= float(value) <= 1:
                raise ConfigError(f"{key}={value} is outside [0, 1] (it is CLIP's weight in the ensemble).")
        name = Path(name or Path(image).name).name  # a name, never a path
        pixels, notes = self.read_image(Path(image), name)
        self._use_vocabulary(vocab)
        self.predictor.set_classifier(
            classifier, self.default_alpha if alpha is None else alpha, self.default_beta if beta is None else beta
        )
        pred = self.predictor.predict(pixels)
        folder = self._result_folder()
        files = write_outputs(pred, Path(name), folder, self.predictor)
        return Segmentation(prediction=pred, files=files, class_names=vocab.names, notes=notes)

    def read_image(self, path: Path, name: str | None = None):
        """(H,W,3) uint8 RGB of an uploaded file, scaled down to ``max_pixels``; and the notes for the page.
        ``name`` stands for the file in messages (default: its name)."""
        from odise_pl.data_modules.transforms import resize_image

        try:
            pixels = self.predictor.read_image(path)
        except DatasetError as err:
            name = name or path.name
            reason = str(err.__cause__ or err).replace(str(path), name)  # no server paths in the page
            raise DatasetError(
                f"'{name}' could not be read as an image ({reason}). Upload a JPEG, PNG, BMP, GIF, TIFF or WebP picture."
            ) from err
        h, w = pixels.shape[:2]
        if h * w <= self.max_pixels:
            return pixels, []
        scale = math.sqrt(self.max_pixels / (h * w))
        nh, nw = max(1, int(h * scale)), max(1, int(w * scale))
        note = (
            f"the image is {w}x{h} ({h * w / 1e6:.0f} MP); it was segmented at {nw}x{nh} (this app's limit is "
            f"{self.max_pixels / 1e6:.1f} MP: start it with --max-pixels to change it)."
        )
        return resize_image(pixels, nh, nw), [note]

    def _result_folder(self) -> Path:
        """A new folder for one request's files; the oldest beyond :data:`KEEP_RESULTS` are deleted."""
        folder = self.out_dir / f"{next(self._counter):06d}"
        folder.mkdir()
        for old in sorted(p for p in self.out_dir.iterdir() if p.is_dir())[:-KEEP_RESULTS]:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def close(self) -> None:
        """Delete the temporary result folder (when the session made it)."""
        if self._own_dir:
            shutil.rmtree(self.out_dir, ignore_errors=True)


__all__ = ["DEFAULT_MAX_CLASSES", "DEFAULT_MAX_PIXELS", "DemoSession", "Segmentation"]
