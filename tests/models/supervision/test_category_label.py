import math

import torch

from odise_pl.models.supervision.base import TextEmbeddings, max_over_synonyms
from odise_pl.models.supervision.category_label import CategoryLabelSupervision


def test_max_over_synonyms_takes_the_best_name_per_class():
    logits = torch.tensor([[0.1, 0.9, 0.3, -1.0]])
    out = max_over_synonyms(logits, torch.tensor([0, 0, 1, 2]), 3)
    assert torch.allclose(out, torch.tensor([[0.9, 0.3, -1.0]]))


def _sup(dim=8, embed=4):
    torch.manual_seed(0)
    text = TextEmbeddings(torch.randn(3, dim), torch.tensor([0, 0, 1]), 2)
    return CategoryLabelSupervision(train_text=text, void_text_embed=torch.randn(dim), embed_dim=embed), text


def test_logits_are_scaled_cosines_with_void_last():
    sup, text = _sup()
    z = torch.randn(2, 5, 4)
    logits = sup.classify(z, text)
    assert logits.shape == (2, 5, 3)
    scale = 1 / 0.07
    assert logits.abs().max() <= scale + 1e-4
    assert math.isclose(sup.classifier.scale().item(), scale, rel_tol=1e-5)
    # class 0 is the max over its two synonyms
    proj = torch.nn.functional.normalize(sup.classifier.text_proj(text.embeds), dim=-1)
    cos = torch.nn.functional.normalize(z, dim=-1) @ proj.t() * scale
    assert torch.allclose(logits[..., 0], cos[..., :2].max(-1).values, atol=1e-5)


def test_another_vocabulary_needs_no_retraining():
    sup, _ = _sup()
    other = TextEmbeddings(torch.randn(5, 8), torch.arange(5), 5)
    assert sup.classify(torch.randn(1, 3, 4), other).shape == (1, 3, 6)


def test_scale_is_clamped():
    sup, text = _sup()
    with torch.no_grad():
        sup.classifier.logit_scale.fill_(10.0)
    assert sup.classifier.scale().item() == 100.0


def test_train_embeddings_are_not_in_the_state_dict():
    sup, _ = _sup()
    assert not any("train_embeds" in k for k in sup.state_dict())
