"""Names a user can pass to ``--model``: public checkpoints and the small bundled ones.

Plain data, kept apart from the checkpoint reader so the command line can show
defaults without importing torch.
"""

from __future__ import annotations

# Public checkpoints: model id -> (Hugging Face repo, file, size preset).
HUB_MODELS: dict[str, tuple[str, str, str]] = {
    f"pixio-vit{s}16": (f"facebook/pixio-vit{s}16", f"pixio_vit{s}16.pth", f"{s}16")
    for s in ("b", "l", "h", "1b", "5b")
}

# Bundled small models shipped inside the package (see README, "Bundled weights").
BUNDLED: dict[str, str] = {"pixio-tiny": "pixio-tiny.safetensors"}
DEFAULT_MODEL = "pixio-tiny"

# Bundled heads, and the default head of each dense task.
BUNDLED_HEADS = {"depth-tiny": "depth-tiny-7scenes.safetensors", "segment-tiny": "segment-tiny-camvid.safetensors"}
DEFAULT_HEAD = {"depth": "depth-tiny", "segment": "segment-tiny"}
