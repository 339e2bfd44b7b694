"""CLIP's BPE tokenizer (the one of Stable Diffusion v1.x's text encoder), built offline."""

from __future__ import annotations

import gzip
from functools import lru_cache


@lru_cache(maxsize=1)
def clip_bpe_tokenizer():
    """CLIP's tokenizer built offline from the BPE merges that ``open_clip`` ships (same ids as SD v1.x's)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(vocab)}, merges=merges, model_max_length=77)
