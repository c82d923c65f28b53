"""A point-map model as a one-image depth predictor: what ``pixio depth`` runs when ``--model`` names a
point-map model (:func:`heads.dense.predict.load_dense` hands it over)."""

from __future__ import annotations

import torch
from torch import nn

from heads.dense.model import HeadConfig
from heads.pointmap.cameras import intrinsics
from heads.pointmap.model import PointMapModel


class PointMapDepth(nn.Module):
    """A point-map model as a one-image depth predictor: each image is a scene of one view; z-depth in
    metres (when the model is metric) and the intrinsics its rays imply. Whole images, no windows:
    each window would get its own scale."""

    whole_image = True

    def __init__(self, model: PointMapModel) -> None:
        super().__init__()
        self.model = model
        self.cfg = HeadConfig(task="depth", crop=0, infer_short=model.infer_short)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x[:, None]).depth_z[:, 0]

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Depth (B, H, W) in metres and the predicted K (B, 3, 3) of single images (B, 3, H, W)."""
        out = self.model(x[:, None])
        K = torch.from_numpy(intrinsics(out.rays[:, 0].float().cpu().numpy())).float()
        return {"out": out.depth_z[:, 0], "K": K}
