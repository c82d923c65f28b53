"""``pixio pretrain``: pretraining (planned)."""

from .common import not_built

register = not_built("pretrain", "pretraining")
