"""``pixio segment``: segmentation heads (planned)."""

from .common import not_built

register = not_built("segment", "segmentation heads")
