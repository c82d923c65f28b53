"""``pixio depth``: depth heads (planned)."""

from .common import not_built

register = not_built("depth", "depth heads")
