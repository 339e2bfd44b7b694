"""FC-CLIP's copies of the benchmark lists: exactly three typo fixes (FCCLIP_REFERENCE.md 1.9, item 12)."""

import pytest

from odise_pl.errors import VocabularyError
from odise_pl.vocab import builtin_variant, load_builtin


def _changed(base: str):
    a, b = load_builtin(base), load_builtin(builtin_variant(base, "fcclip"))
    assert [c.source_id for c in a] == [c.source_id for c in b]
    assert a.is_thing == b.is_thing  # thing flags follow the dataset, not the spelling
    return [(c.source_id, set(c.names) - set(d.names), set(d.names) - set(c.names)) for c, d in zip(a, b) if c.names != d.names]


def test_three_fixes_and_nothing_else():
    assert _changed("coco_panoptic_with_prompt_eng") == [(1, {"childeren"}, {"children"}), (145, {"baseball feild"}, {"baseball field"})]
    assert _changed("ade20k_847_with_prompt_eng") == [(105, {"girraffe"}, {"giraffe"})]


def test_lists_fcclip_left_alone_have_no_variant():
    assert builtin_variant("ade20k_150_with_prompt_eng", "fcclip") == "ade20k_150_with_prompt_eng"  # keeps girraffe
    assert builtin_variant("pascal_context_59_with_prompt_eng", None) == "pascal_context_59_with_prompt_eng"
    with pytest.raises(VocabularyError, match="unknown vocabulary variant 'fclip'"):
        builtin_variant("coco_panoptic_with_prompt_eng", "fclip")
