"""``pixio recon3d``: feed-forward 3D reconstruction (planned)."""

from .common import not_built

register = not_built("recon3d", "feed-forward 3D reconstruction")
