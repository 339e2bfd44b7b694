"""The geometric ensemble of the diffusion classifier and the CLIP mask classifier.

With p the diffusion classifier's class probabilities and q CLIP's, a class the
model saw in training (one of its names is a training-vocabulary name) scores
``p^(1-alpha) * q^alpha``, an unseen class ``p^(1-beta) * q^beta``; the scores
are renormalised over the K classes, scaled by ``1 - p_void`` and ``p_void`` is
appended. The reference uses alpha=0.3, beta=0.7 for the label model and
0.35/0.65 for the caption model (:data:`REFERENCE_WEIGHTS`).

As in the reference implementation, p is the softmax over the K class logits
alone (the void column excluded) and ``p_void`` is the void entry of the
softmax over all K+1. ``void_in_class_softmax=True`` takes p from the K+1
softmax instead (sliced, not renormalised).

Modes (``inference.classifier``): ``"in_vocab"`` (p only: the plain K+1 softmax),
``"clip"`` (q only, with the diffusion classifier's ``p_void``) and ``"ensemble"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from odise_pl.config.schema import InferenceConfig, aliases_of, choices_of
from odise_pl.vocab import Vocabulary, normalize_name

MODES = choices_of(InferenceConfig, "classifier")  # in_vocab, clip, ensemble
MODE_ALIASES = aliases_of(InferenceConfig, "classifier")  # diffusion -> in_vocab (the old name)
#: (alpha, beta) of each reference recipe, by supervision: ODISE's label and caption models, FC-CLIP's
REFERENCE_WEIGHTS = {"category_label": (0.3, 0.7), "caption_grounding": (0.35, 0.65), "fcclip_label": (0.4, 0.8)}


@dataclass(frozen=True)
class SeenSplit:
    """Which test classes were seen in training.

    Attributes:
        mask: (K,) bool, True for a class with a name in the training vocabulary.
        num_seen: number of seen classes (for logging).
        num_unseen: number of unseen classes.
    """

    mask: torch.Tensor
    num_seen: int
    num_unseen: int


def _groups(classes) -> list[list[str]]:
    if isinstance(classes, Vocabulary):
        return classes.synonyms
    return [[g] if isinstance(g, str) else list(g) for g in classes]


def seen_class_mask(classes: Vocabulary | Sequence[Sequence[str]], train_classes: Vocabulary | Iterable[Sequence[str] | str]) -> SeenSplit:
    """Mark the test classes that share a name (any synonym) with the training vocabulary.

    Names are compared after :func:`odise_pl.vocab.normalize_name` (case, spaces, ``_``).

    Args:
        classes: the test vocabulary (K classes), or one list of names per class.
        train_classes: the training vocabulary, one list of names per class, or plain names.

    Returns:
        SeenSplit with ``mask`` (K,) bool and the counts.
    """
    train = {normalize_name(n) for group in _groups(train_classes) for n in group}
    mask = torch.tensor([any(normalize_name(n) in train for n in group) for group in _groups(classes)], dtype=torch.bool)
    return SeenSplit(mask, int(mask.sum()), int((~mask).sum()))


def geometric_ensemble(
    diffusion_logits: torch.Tensor,
    clip_logits: torch.Tensor | None,
    seen: torch.Tensor | None,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    mode: str = "ensemble",
    void_in_class_softmax: bool = False,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Combine the two classifiers into class probabilities.

    Args:
        diffusion_logits: (B,Q,K+1) logits of the trained classifier, void last.
        clip_logits: (B,Q,K) CLIP mask-classifier logits (unused in "in_vocab" mode).
        seen: (K,) bool seen-class mask (:func:`seen_class_mask`); needed in "ensemble" mode.
        alpha: CLIP's weight for seen classes.
        beta: CLIP's weight for unseen classes.
        mode: "in_vocab", "clip" or "ensemble".
        void_in_class_softmax: take p from the K+1 softmax (see the module docstring).
        valid: optional (B,Q) bool; CLIP's weight is 0 for a False query (FC-CLIP's
            ``ensemble_on_valid_mask``: masks with no pixel at CLIP's resolution keep p).

    Returns:
        (B,Q,K+1) probabilities (each row sums to 1), void last.
    """
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ValueError(f"unknown classifier mode '{mode}': use one of {', '.join(MODES)}")
    logits = diffusion_logits.float()
    log_all = logits.log_softmax(dim=-1)  # (B,Q,K+1)
    p_void = log_all[..., -1:].exp()  # (B,Q,1)
    if mode == "in_vocab":
        return log_all.exp()
    K = logits.shape[-1] - 1
    if clip_logits is None or clip_logits.shape[-1] != K or clip_logits.shape[:-1] != logits.shape[:-1]:
        shape = None if clip_logits is None else tuple(clip_logits.shape)
        raise ValueError(f"mode '{mode}' needs CLIP logits of shape {(*logits.shape[:-1], K)}, got {shape}")
    log_q = clip_logits.float().log_softmax(dim=-1)  # (B,Q,K)
    if mode == "clip":
        class_probs = log_q.exp()
    else:
        if seen is None or seen.shape != (K,):
            raise ValueError(f"ensemble mode needs a ({K},) seen-class mask, got {None if seen is None else tuple(seen.shape)}")
        log_p = log_all[..., :-1] if void_in_class_softmax else logits[..., :-1].log_softmax(dim=-1)
        class_probs = mixed_log_probs(log_p, log_q, seen, alpha, beta, valid).softmax(dim=-1)  # renormalised over K
    return torch.cat([class_probs * (1 - p_void), p_void], dim=-1)


def mixed_log_probs(
    log_p: torch.Tensor, log_q: torch.Tensor, seen: torch.Tensor, alpha: float, beta: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """``(1 - w) log p + w log q`` (B,Q,K) with CLIP's weight ``w`` = alpha for seen classes, beta for unseen
    (0 for a query whose ``valid`` (B,Q) is False): the log of the reference's ``p^(1-w) q^w``, before the
    renormalisation over K."""
    weight = torch.where(seen.to(log_p.device), alpha, beta).to(log_p.dtype)  # (K,) CLIP's exponent
    if valid is not None:
        weight = weight * valid.to(device=log_p.device, dtype=log_p.dtype).unsqueeze(-1)  # (B,Q,K)
    return (1 - weight) * log_p + weight * log_q


class GeometricEnsemble(torch.nn.Module):
    """Module form of :func:`geometric_ensemble` holding the mode, weights and seen mask.

    Args:
        mode: "in_vocab", "clip" or "ensemble".
        alpha, beta: CLIP's weight for seen / unseen classes.
        seen: (K,) bool seen-class mask, or None (set it later with :meth:`set_seen`).
        void_in_class_softmax: see the module docstring.
    """

    def __init__(
        self,
        *,
        mode: str = "ensemble",
        alpha: float = 0.3,
        beta: float = 0.7,
        seen: torch.Tensor | None = None,
        void_in_class_softmax: bool = False,
    ) -> None:
        super().__init__()
        mode = MODE_ALIASES.get(mode, mode)
        if mode not in MODES:
            raise ValueError(f"unknown classifier mode '{mode}': use one of {', '.join(MODES)}")
        for key, value in (("alpha", alpha), ("beta", beta)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"inference.{key} must be in [0, 1], got {value}")
        self.mode, self.alpha, self.beta = mode, float(alpha), float(beta)
        self.void_in_class_softmax = void_in_class_softmax
        self.register_buffer("seen", seen.bool() if seen is not None else None, persistent=False)

    @property
    def needs_clip(self) -> bool:
        return self.mode != "in_vocab"

    def set_seen(self, seen: torch.Tensor | SeenSplit) -> None:
        """Set the (K,) seen mask for a new test vocabulary."""
        mask = seen.mask if isinstance(seen, SeenSplit) else seen
        self.seen = mask.bool().to(self.seen.device if self.seen is not None else mask.device)

    def forward(
        self, diffusion_logits: torch.Tensor, clip_logits: torch.Tensor | None = None, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B,Q,K+1) and (B,Q,K) logits (and optional (B,Q) valid masks) -> (B,Q,K+1) probabilities."""
        return geometric_ensemble(
            diffusion_logits,
            clip_logits,
            self.seen,
            alpha=self.alpha,
            beta=self.beta,
            mode=self.mode,
            void_in_class_softmax=self.void_in_class_softmax,
            valid=valid,
        )

    def extra_repr(self) -> str:
        return f"mode={self.mode}, alpha={self.alpha}, beta={self.beta}"
