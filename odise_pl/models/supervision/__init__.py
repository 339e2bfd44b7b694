"""Supervision strategies: one file each; importing this package registers them."""

from odise_pl.models.supervision import (
    caption_grounding,  # noqa: F401
    category_label,  # noqa: F401
    fcclip_label,  # noqa: F401
)
