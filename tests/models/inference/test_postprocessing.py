import torch

from odise_pl.models.inference.instance import instance_inference
from odise_pl.models.inference.panoptic import panoptic_inference
from odise_pl.models.inference.semantic import semantic_inference


def _case():
    # 3 queries over a 4x6 image, 2 classes (0 thing, 1 stuff) + void
    masks = torch.full((3, 4, 6), -10.0)
    masks[0, :, :3] = 10.0  # left half: thing 0
    masks[1, :, 3:] = 10.0  # right half: stuff 1
    masks[2, :, 4:] = 10.0  # right strip: also stuff 1 (merged with query 1)
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.7, 0.2]])
    return probs, masks, torch.tensor([True, False])


def test_panoptic_segments_do_not_overlap_and_stuff_merges():
    probs, masks, is_thing = _case()
    ids, segs = panoptic_inference(probs, masks, is_thing)
    assert [s["category"] for s in segs] == [0, 1]
    assert (ids[:, :3] == 1).all() and (ids[:, 3:] == 2).all()
    assert [s["area"] for s in segs] == [12, 12]


def test_void_and_low_scores_are_dropped():
    probs, masks, is_thing = _case()
    probs[0] = torch.tensor([0.1, 0.1, 0.8])  # query 0 predicts void
    ids, segs = panoptic_inference(probs, masks, is_thing)
    assert (ids[:, :3] == 0).all()
    assert all(s["category"] == 1 for s in segs)
    ids, segs = panoptic_inference(probs, masks, is_thing, object_mask_threshold=0.95)
    assert segs == [] and (ids == 0).all()


def test_overlap_threshold_drops_mostly_hidden_masks():
    probs, masks, is_thing = _case()
    masks[0, :, :] = 10.0  # query 0 covers everything but wins only the left half (score 0.9 > 0.8)
    probs[1, 1] = 0.95  # now query 1 wins the right half
    _, segs = panoptic_inference(probs, masks, is_thing, overlap_threshold=0.8)
    assert 0 not in [s["category"] for s in segs]  # query 0 keeps 50% < 80% of its mask


def test_semantic_and_instance():
    probs, masks, is_thing = _case()
    sem = semantic_inference(probs, masks).argmax(0)
    assert (sem[:, :3] == 0).all() and (sem[:, 3:] == 1).all()
    inst = instance_inference(probs, masks, is_thing, topk=2)
    assert (inst["labels"] == 0).all()  # only thing classes become instances
    assert inst["masks"].shape[1:] == (4, 6) and inst["scores"][0] > 0.8


def test_instances_rank_all_classes_before_keeping_things():
    # 4 queries, classes 0 (thing), 1 (stuff); the stuff pairs outrank two of the thing pairs
    probs = torch.tensor([[0.60, 0.30, 0.10], [0.05, 0.90, 0.05], [0.20, 0.70, 0.10], [0.40, 0.50, 0.10]])
    masks = torch.full((4, 2, 4), -10.0)
    masks[:, :, :2] = 10.0
    masks[0, 0, 0] = 0.5  # a pixel of lower confidence in query 0's mask
    is_thing = torch.tensor([True, False])
    inst = instance_inference(probs, masks, is_thing, topk=3)
    # top-3 over all pairs: (1, stuff) 0.9, (2, stuff) 0.7, (0, thing) 0.6 -> one thing instance;
    # filtering first would have kept queries 0, 3 and 2
    assert inst["labels"].tolist() == [0] and inst["masks"].shape == (1, 2, 4)
    mask_score = (torch.sigmoid(torch.tensor(0.5)) + 3 * torch.sigmoid(torch.tensor(10.0))) / (4 + 1e-6)
    assert torch.allclose(inst["scores"], 0.6 * mask_score)
    assert instance_inference(probs, masks, is_thing, topk=5)["labels"].tolist() == [0, 0]  # + (3, thing) 0.4
