"""Grounding loss: against a loop-by-loop reading of the formula, and 2-rank DDP against one process."""

from __future__ import annotations

import math
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from odise_pl.models.supervision import grounding_loss as gl_module
from odise_pl.models.supervision.grounding_loss import GroundingLoss, grounding_loss, image_caption_scores

GLOBAL_BATCH, QUERIES, WORDS, IN_DIM, DIM = 6, 5, 4, 12, 8


def naive_loss(z, w, tau, mask):
    """The formula of ODISE_REFERENCE.md, one pair and one term at a time."""
    z = z / z.norm(dim=-1, keepdim=True)
    w = w / w.norm(dim=-1, keepdim=True)
    n = len(z)
    g = [[None] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            s = tau * z[i] @ w[j].T  # (Q, K)
            per_word = (torch.softmax(s, dim=0) * s).sum(dim=0)  # (K,)
            g[i][j] = per_word[mask[j]].mean() if mask[j].any() else None
    valid = [j for j in range(n) if mask[j].any()]
    terms = []
    for i in valid:  # image i: which caption?  (captions without words are no candidates)
        logits = torch.stack([g[i][j] for j in valid])
        terms.append(-torch.log_softmax(logits, 0)[valid.index(i)])
    for j in valid:  # caption j: which image?
        logits = torch.stack([g[i][j] for i in range(n)])
        terms.append(-torch.log_softmax(logits, 0)[j])
    return torch.stack(terms).sum() / (2 * len(valid))


def make_batch(seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(GLOBAL_BATCH, QUERIES, IN_DIM, generator=gen, dtype=dtype)
    w = torch.randn(GLOBAL_BATCH, WORDS, IN_DIM, generator=gen, dtype=dtype)
    mask = torch.ones(GLOBAL_BATCH, WORDS, dtype=torch.bool)
    mask[1, 2:] = False  # fewer words
    mask[4, 1:] = False  # a single word
    mask[3] = False  # a caption without any noun
    return z, w, mask


class Heads(nn.Module):
    """The trainable parts in front of the loss: two projections and the log logit scale."""

    def __init__(self, seed=1, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(seed)
        self.mask_proj = nn.Linear(IN_DIM, DIM).to(dtype)
        self.word_proj = nn.Linear(IN_DIM, DIM).to(dtype)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07), dtype=dtype))

    def forward(self, z, w):
        return self.mask_proj(z), self.word_proj(w), self.log_scale.exp().clamp(max=100)


def test_scores_match_the_formula():
    z, w, mask = make_batch()
    z, w = F.normalize(z, dim=-1), F.normalize(w, dim=-1)
    g = image_caption_scores(z, w, 7.0, mask)
    assert g.shape == (GLOBAL_BATCH, GLOBAL_BATCH)
    s = 7.0 * z[2] @ w[1].T  # (Q, K), caption 1 has two real words
    expected = ((s.softmax(0) * s).sum(0))[:2].mean()
    torch.testing.assert_close(g[2, 1], expected)
    assert torch.all(g[:, 3] == 0)  # no words, no score


def test_loss_matches_naive_loops_values_and_gradients():
    z, w, mask = make_batch()
    z.requires_grad_(True), w.requires_grad_(True)
    tau = torch.tensor(9.0, dtype=torch.float64, requires_grad=True)
    loss = grounding_loss(z, w, tau, mask)
    grads = torch.autograd.grad(loss, (z, w, tau))
    ref = naive_loss(z, w, tau, mask)
    ref_grads = torch.autograd.grad(ref, (z, w, tau))
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-10)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    # masked words and the wordless caption get no gradient at all
    assert torch.all(grads[1][1, 2:] == 0) and torch.all(grads[1][3] == 0)
    assert grads[1][1, :2].abs().sum() > 0 and grads[2].abs() > 0


def test_masked_words_do_not_change_the_loss_and_no_mask_means_all_words():
    z, w, mask = make_batch()
    loss = grounding_loss(z, w, 10.0, mask)
    w2 = w.clone()
    w2[~mask] = torch.randn(int((~mask).sum()), IN_DIM, dtype=w.dtype)
    assert torch.equal(grounding_loss(z, w2, 10.0, mask), loss)
    full = torch.ones_like(mask)
    assert torch.equal(grounding_loss(z, w, 10.0, full), grounding_loss(z, w, 10.0, None))
    assert not torch.allclose(grounding_loss(z, w, 10.0, None), loss)


def test_loss_prefers_matching_pairs_and_ignores_batch_order():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(5, WORDS, DIM, generator=gen)
    z = torch.randn(5, QUERIES, DIM, generator=gen)
    z[:, :WORDS] = w + 0.05 * torch.randn(5, WORDS, DIM, generator=gen)  # one mask per word
    aligned = grounding_loss(z, w, 20.0)
    shuffled = grounding_loss(z, w.roll(1, dims=0), 20.0)
    assert aligned < 0.1 < shuffled
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(grounding_loss(z[perm], w[perm], 20.0), aligned)
    torch.testing.assert_close(GroundingLoss()(z, w, torch.tensor(20.0)), aligned)


def test_no_real_word_in_the_batch_gives_zero_with_a_graph():
    z = torch.randn(2, QUERIES, DIM, requires_grad=True)
    w = torch.randn(2, WORDS, DIM)
    loss = grounding_loss(z, w, 10.0, torch.zeros(2, WORDS, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0 and torch.all(z.grad == 0)


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(3, 5, 8\)"):
        grounding_loss(torch.randn(3, 5, 8), torch.randn(2, 4, 8), 1.0)
    with pytest.raises(ValueError, match="word_mask"):
        grounding_loss(torch.randn(2, 5, 8), torch.randn(2, 4, 8), 1.0, torch.ones(2, 3, dtype=torch.bool))


# -- two CPU ranks (gloo) against one process ------------------------------------------------------

SPLITS = {"even": [3, 3], "uneven": [4, 2]}


def _single_process(heads, z, w, mask):
    zp, wp, tau = heads(z, w)
    loss = grounding_loss(zp, wp, tau, mask)
    grads = torch.autograd.grad(loss, list(heads.parameters()))
    return loss.detach(), [g.detach() for g in grads]


def _detached_gather(tensor, sizes):
    """A gather whose other-rank rows carry no gradient (equal sizes only): a negative control."""
    every = [torch.empty_like(tensor) for _ in sizes]
    dist.all_gather(every, tensor.detach().contiguous())
    every[dist.get_rank()] = tensor
    return torch.cat(every)


def _rank_share(heads, z, w, mask, lo, hi):
    zp, wp, tau = heads(z[lo:hi], w[lo:hi])
    return grounding_loss(zp, wp, tau, mask[lo:hi])


def _averaged(tensors, world):
    out = []
    for t in tensors:
        t = t.detach().clone()
        dist.all_reduce(t)
        out.append(t / world)
    return out


def _worker(rank, world, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=40))
    try:
        z, w, mask = make_batch()
        results = {}
        for name, sizes in SPLITS.items():
            lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
            heads = Heads()
            loss = _rank_share(heads, z, w, mask, lo, hi)
            grads = torch.autograd.grad(loss, list(heads.parameters()))
            mean_loss, *mean_grads = _averaged([loss, *grads], world)  # what DDP does to gradients
            results[name] = {"loss": mean_loss, "grads": mean_grads}

        # the real thing: DistributedDataParallel averages the gradients itself
        heads = Heads()
        ddp = nn.parallel.DistributedDataParallel(heads)
        lo, hi = 3 * rank, 3 * rank + 3
        zp, wp, tau = ddp(z[lo:hi], w[lo:hi])
        grounding_loss(zp, wp, tau, mask[lo:hi]).backward()
        results["ddp"] = {"grads": [p.grad.detach().clone() for p in heads.parameters()]}

        # negative control: without gradients through the gather the result must differ
        original = gl_module.all_gather_with_grad
        gl_module.all_gather_with_grad = _detached_gather
        try:
            heads = Heads()
            loss = _rank_share(heads, z, w, mask, lo, hi)
            grads = torch.autograd.grad(loss, list(heads.parameters()))
            results["detached"] = {"grads": _averaged(grads, world)}
        finally:
            gl_module.all_gather_with_grad = original
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_ranks(tmp_path, timeout=90.0):
    import torch.multiprocessing as mp

    ctx = mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the 2-rank gloo run did not finish in {timeout:.0f} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


@pytest.mark.ddp
def test_two_rank_ddp_matches_single_process(tmp_path):
    ranks = _run_two_ranks(tmp_path)
    z, w, mask = make_batch()
    ref_loss, ref_grads = _single_process(Heads(), z, w, mask)
    names = [n for n, _ in Heads().named_parameters()]
    assert ref_grads[names.index("log_scale")].abs() > 1e-6  # the scale does get a gradient
    for result in ranks:
        for split in SPLITS:
            torch.testing.assert_close(result[split]["loss"], ref_loss, rtol=0, atol=1e-5)
            for name, got, want in zip(names, result[split]["grads"], ref_grads):
                torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=f"{split}: {name}")
        for name, got, want in zip(names, result["ddp"]["grads"], ref_grads):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=f"DDP: {name}")
        detached = result["detached"]["grads"][names.index("mask_proj.weight")]
        assert (detached - ref_grads[names.index("mask_proj.weight")]).abs().max() > 1e-3
