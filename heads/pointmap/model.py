"""Feed-forward point maps: MapAnything's architecture on a Pixio encoder.

For V views of one scene: the Pixio encoder's last normed patch tokens per
view (plus, when the cameras are known, an encoding of their ray directions),
a fusion LayerNorm, a learnable scale token, and a transformer that alternates
attention over all views' tokens with attention within each view (the
reference view, view 0, carries a fixed marker). A DPT head on the fused
encoder tokens, two intermediate layers and the last one predicts per pixel a
unit ray direction, the depth along it, a confidence and a mask; a pose head
predicts each view's camera-to-world pose in view 0's frame (translation and
an (x, y, z, w) quaternion); a scale head on the scale token predicts one
metric scale that multiplies every length.

Written from the MapAnything and UniCeption sources (facebookresearch/map-anything
``configs/model/pixio.yaml``); module names follow MapAnything's checkpoint
where that costs nothing, and :func:`heads.pointmap.checkpoint.from_mapanything` maps the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from pixio_cli.encoder import PixioEncoder
from pixio_cli.errors import CheckpointError
from pixio_cli.model_ids import POINTMAP_SHORT_SIDE
from pixio_cli.vit import Block

from heads.dense.dpt import DPTHead
from heads.pointmap.cameras import matrix_to_quaternion, quaternion_multiply, quaternion_to_matrix

LayerNorm = partial(nn.LayerNorm, eps=1e-6)


@dataclass
class PointMapConfig:
    """Shape of a point-map model besides its encoder. The defaults are MapAnything's (Pixio-H)."""

    dim: int = 768  # multi-view transformer width
    depth: int = 24  # its layers (even: global, odd: per view)
    num_heads: int = 12
    taps: list[int] = field(default_factory=lambda: [11, 17])  # layers fed to the DPT head
    dpt_channels: list[int] = field(default_factory=lambda: [96, 192, 384, 768])
    dpt_features: int = 256
    pose_blocks: int = 2
    pose_dim: int | None = None  # pose head width; MapAnything's is 4 x patch^2 (1024)
    scale_hidden: int = 196
    ray_dims: list[int] = field(default_factory=lambda: [588, 768, 1024])
    geometric_inputs: bool = False  # MapAnything's encoders of known depth, poses and their scales

    @classmethod
    def from_dict(cls, d: dict) -> "PointMapConfig":
        """The config saved in a checkpoint (unknown keys ignored)."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict:
        """The config as saved in a checkpoint."""
        return asdict(self)


# ---------------------------------------------------------------------------- blocks


class ResidualBlock(nn.Module):
    """conv3x3-GELU-conv3x3 plus a (1x1 when widths differ) shortcut, then GELU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv2(F.gelu(self.conv1(x))) + self.shortcut(x))


class RayEncoder(nn.Module):
    """Per-pixel inputs (B, C, H, W): camera rays (C 3) or depth (C 1) -> one token per patch (B, H/p * W/p, D):
    pixel-unshuffle, convolutions, LayerNorm (UniCeption's dense representation encoder, no position
    embedding)."""

    def __init__(self, patch: int, dims: list[int], embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(patch)
        self.conv_in = nn.Conv2d(in_chans * patch * patch, dims[0], 3, padding=1)
        layers: list[nn.Module] = [ResidualBlock(a, b) for a, b in zip(dims[:-1], dims[1:])]
        layers.append(nn.Conv2d(dims[-1], embed_dim, 1))
        self.encoder = nn.Sequential(*layers)
        self.norm_layer = LayerNorm(embed_dim)

    def forward(self, rays: torch.Tensor) -> torch.Tensor:
        x = self.encoder(self.conv_in(self.unshuffle(rays)))
        return self.norm_layer(x.flatten(2).transpose(1, 2))


class GlobalEncoder(nn.Module):
    """One vector per view (B, C) -> (B, D): Linear-GELU x 3, Linear, LayerNorm (UniCeption's global
    representation encoder, nested as it nests them, so the checkpoint's names fit)."""

    def __init__(self, in_chans: int, embed_dim: int, dims: tuple[int, ...] = (128, 256, 512)) -> None:
        super().__init__()
        encoder: nn.Module = nn.Sequential(nn.Linear(in_chans, dims[0]), nn.GELU())
        for a, b in zip(dims[:-1], dims[1:]):
            encoder = nn.Sequential(encoder, nn.Linear(a, b), nn.GELU())
        self.encoder = nn.Sequential(encoder, nn.Linear(dims[-1], embed_dim))
        self.norm_layer = LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_layer(self.encoder(x))


class MultiViewTransformer(nn.Module):
    """Alternating attention over V views' tokens and extra (global) tokens.

    Even layers attend over everything; odd layers within each view (the extra
    tokens pass through). View 0's tokens get a fixed marker after the input
    projection. Returns the normed outputs of ``taps`` and of the last layer.
    """

    def __init__(self, in_dim: int, cfg: PointMapConfig) -> None:
        super().__init__()
        self.dim, self.taps = cfg.dim, list(cfg.taps)
        self.proj_embed = nn.Linear(in_dim, cfg.dim) if in_dim != cfg.dim else nn.Identity()
        self.self_attention_blocks = nn.ModuleList(
            Block(cfg.dim, cfg.num_heads, 4.0, qkv_bias=True) for _ in range(cfg.depth))
        self.norm = LayerNorm(cfg.dim)
        # row 0 of the sinusoid table: sin(0)=0 on even channels, cos(0)=1 on odd ones
        marker = torch.zeros(1, cfg.dim)
        marker[0, 1::2] = 1.0
        self.register_buffer("view_pos_table", marker)

    def forward(self, views: torch.Tensor, extra: torch.Tensor) -> list[torch.Tensor]:
        """views (B, V, N, C_in), extra (B, T, C_in) -> [taps..., last], each (B, V*N + T, dim)."""
        B, V, N, _ = views.shape
        x = self.proj_embed(torch.cat([views.reshape(B, V * N, -1), extra], dim=1))
        x = torch.cat([x[:, :N] + self.view_pos_table.to(x.dtype), x[:, N:]], dim=1)
        out = []
        for i, blk in enumerate(self.self_attention_blocks):
            if i % 2 == 0:
                x = blk(x)
            else:
                per_view = blk(x[:, : V * N].reshape(B * V, N, self.dim)).reshape(B, V * N, self.dim)
                x = torch.cat([per_view, x[:, V * N:]], dim=1)
            if i in self.taps:
                out.append(self.norm(x))
        out.append(self.norm(x))
        return out


MAX_UPSAMPLED = 2**31 - 1  # elements one bilinear upsampling may write on CUDA
DENSE_VIEWS = 8  # views through the dense head at once: MapAnything's memory-efficient inference


class PixelRegressor(nn.Module):
    """DPT features (B, F, 8h, 8w) -> (B, n_out, H, W): conv, bilinear to the image, conv-ReLU-conv."""

    def __init__(self, features: int, n_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.conv2 = nn.Sequential(nn.Conv2d(features // 2, features // 2, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(features // 2, n_out, 1))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(self.conv1(x), size=hw, mode="bilinear", align_corners=True)
        return self.conv2(x)


class ResConvBlock(nn.Module):
    """The pose head's residual block of 1x1 convolutions, named as MapAnything's checkpoints name it."""
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.res_conv1 = nn.Conv2d(dim, dim, 1)
        self.res_conv2 = nn.Conv2d(dim, dim, 1)
        self.res_conv3 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.res_conv3(F.relu(self.res_conv2(F.relu(self.res_conv1(x))))))


class PoseHead(nn.Module):
    """Per-view token map (B, C, h, w) -> (B, 7): translation (3) then a raw quaternion (x, y, z, w)."""

    def __init__(self, in_dim: int, dim: int, blocks: int = 2) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_dim, dim, 1)
        self.res_conv = nn.ModuleList(ResConvBlock(dim) for _ in range(blocks))
        self.more_mlps = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.fc_t = nn.Linear(dim, 3)
        self.fc_rot = nn.Linear(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        for blk in self.res_conv:
            x = blk(x)
        x = self.more_mlps(x.mean(dim=(2, 3)))
        return torch.cat([self.fc_t(x), self.fc_rot(x)], dim=1)


class ScaleHead(nn.Module):
    """The scale token (B, C) -> log of the metric scale (B,)."""

    def __init__(self, in_dim: int, hidden: int = 196, layers: int = 2) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden)
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU()) for _ in range(layers))
        self.output_proj = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        for layer in self.mlp:
            x = layer(x)
        return self.output_proj(x)[:, 0]


# ---------------------------------------------------------------------------- the model


@dataclass
class PointMapOutput:
    """Per view (leading dims B, V), float32, lengths in metres when the model is metric.

    ``pts3d`` are in view 0's predicted frame (the world of ``cam2world``);
    ``rays`` are unit directions in each camera's frame (OpenCV axes);
    ``depth_z`` is the z-depth, ``depth_ray`` the depth along the ray.
    """

    pts3d: torch.Tensor  # (B, V, H, W, 3)
    pts3d_cam: torch.Tensor  # (B, V, H, W, 3)
    rays: torch.Tensor  # (B, V, H, W, 3)
    depth_ray: torch.Tensor  # (B, V, H, W)
    depth_z: torch.Tensor  # (B, V, H, W)
    conf: torch.Tensor  # (B, V, H, W), >= 1
    mask_logits: torch.Tensor  # (B, V, H, W); mask = logits > 0
    cam2world: torch.Tensor  # (B, V, 4, 4)
    quats: torch.Tensor  # (B, V, 4), unit, (x, y, z, w)
    scale: torch.Tensor  # (B,)
    descriptor: torch.Tensor | None = None  # (B, V, D): each view's mean encoder token, unit length


class PointMapModel(nn.Module):
    """Images of V views (B, V, 3, H, W), ImageNet-normalised -> :class:`PointMapOutput`."""

    # set by heads.pointmap.checkpoint.load_pointmap from the file
    source: str = ""
    metric: bool = True  # the scale head gives metres
    infer_short: int = POINTMAP_SHORT_SIDE  # the short side it runs at unless told otherwise
    provenance: dict | None = None

    def __init__(self, encoder: PixioEncoder, cfg: PointMapConfig) -> None:
        super().__init__()
        self.encoder, self.cfg = encoder, cfg
        d, p = encoder.embed_dim, encoder.patch_size
        self.fusion_norm_layer = LayerNorm(d)
        self.scale_token = nn.Parameter(torch.zeros(d))
        self.info_sharing = MultiViewTransformer(d, cfg)
        self.dpt = DPTHead([d, cfg.dim, cfg.dim, cfg.dim], None, cfg.dpt_features, tuple(cfg.dpt_channels),
                           style="mapanything")
        self.regressor = PixelRegressor(cfg.dpt_features, 6)  # ray (3), depth, confidence, mask
        self.pose_head = PoseHead(cfg.dim, cfg.pose_dim or 4 * p * p, cfg.pose_blocks)
        self.scale_head = ScaleHead(cfg.dim, cfg.scale_hidden)
        self.ray_dirs_encoder = RayEncoder(p, cfg.ray_dims, d)
        if cfg.geometric_inputs:
            self.depth_encoder = RayEncoder(p, cfg.ray_dims, d, in_chans=1)
            self.depth_scale_encoder = GlobalEncoder(1, d)
            self.cam_rot_encoder = GlobalEncoder(4, d)
            self.cam_trans_encoder = GlobalEncoder(3, d)
            self.cam_trans_scale_encoder = GlobalEncoder(1, d)

    def init_weights(self) -> None:
        """Random initialisation for training from scratch (the encoder is left as it is)."""
        nn.init.trunc_normal_(self.scale_token, std=0.02)
        for name, m in self.named_modules():
            if name.startswith("encoder"):
                continue
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def float32_parts(self) -> list[nn.Module]:
        """The modules MapAnything runs in float32 whatever the precision of the rest (geometric
        inputs and their fusion, and the heads)."""
        parts = [self.ray_dirs_encoder, self.fusion_norm_layer, self.dpt, self.regressor, self.pose_head,
                 self.scale_head]
        if self.cfg.geometric_inputs:
            parts += [self.depth_encoder, self.depth_scale_encoder, self.cam_rot_encoder, self.cam_trans_encoder,
                      self.cam_trans_scale_encoder]
        return parts

    def forward(self, images: torch.Tensor, rays: torch.Tensor | None = None, depth_ray: torch.Tensor | None = None,
                cam2world: torch.Tensor | None = None, metric: bool = True) -> PointMapOutput:
        """Known inputs, each optional: ``rays`` unit ray directions (B, V, H, W, 3) of each view's camera;
        with a model that has MapAnything's encoders of them, ``depth_ray`` depth along those rays (B, V, H,
        W), 0 where unknown, and ``cam2world`` poses (B, V, 4, 4), OpenCV axes, in metres when ``metric``.
        The outputs are in the first view's camera frame, as MapAnything's."""
        B, V, _, H, W = images.shape
        p, n_cls = self.encoder.patch_size, self.encoder.n_cls_tokens
        h, w = H // p, W // p
        if (depth_ray is not None or cam2world is not None) and not self.cfg.geometric_inputs:
            raise CheckpointError("this point-map model has no encoders of known depth or poses (MapAnything's do)")
        tokens = self.encoder(images.reshape(B * V, 3, H, W))[:, n_cls:]
        with torch.autocast(images.device.type, enabled=False):
            tokens = tokens.float()
            seen = tokens.mean(1)  # the image alone, before any camera or depth is added
            if rays is not None:
                tokens = tokens + self.ray_dirs_encoder(rays.reshape(B * V, H, W, 3).permute(0, 3, 1, 2).float())
            if depth_ray is not None:
                tokens = tokens + self._depth_tokens(depth_ray.reshape(B * V, H, W).float(), metric)
            if cam2world is not None:
                tokens = tokens + self._pose_tokens(cam2world.float(), metric).reshape(B * V, 1, -1)
            fused = self.fusion_norm_layer(tokens)  # (BV, hw, D)
        extra = self.scale_token.to(fused.dtype).expand(B, 1, -1)
        layers = self.info_sharing(fused.reshape(B, V, h * w, -1), extra)

        def maps(t: torch.Tensor) -> torch.Tensor:  # (B, V*hw + 1, C) -> (BV, C, h, w)
            return t[:, : V * h * w].reshape(B * V, h, w, -1).permute(0, 3, 1, 2).float()

        with torch.autocast(images.device.type, enabled=False):
            fused_map = fused.float().reshape(B * V, h, w, -1).permute(0, 3, 1, 2)
            taps = [fused_map] + [maps(t) for t in layers]
            # Views go through the dense head in groups: CUDA's bilinear upsampling refuses an output of
            # 2**31 elements or more (64 views of 512 px do), and peak memory falls with the group.
            group = max(1, min(DENSE_VIEWS, MAX_UPSAMPLED // (self.regressor.conv1.out_channels * H * W)))
            dense = torch.cat([self.regressor(self.dpt([t[i:i + group] for t in taps]), (H, W))
                               for i in range(0, B * V, group)]).permute(0, 2, 3, 1)  # (BV, H, W, 6)
            pose = self.pose_head(maps(layers[-1]))
            scale = self.scale_head(layers[-1][:, -1].float()).exp().clamp(min=1e-8)  # (B,)
        out = decode(dense.reshape(B, V, H, W, 6), pose.reshape(B, V, 7), scale)
        # what the image shows, as one vector: finds the frames where a video returns (heads.recon.sfm.loop_pairs)
        out.descriptor = F.normalize(seen, dim=-1).reshape(B, V, -1)
        return out


    def _depth_tokens(self, depth: torch.Tensor, metric: bool) -> torch.Tensor:
        """Known depth along the rays (N, H, W) -> tokens (N, hw, D) (see :func:`depth_inputs`)."""
        rel, log_norm, given = depth_inputs(depth)
        out = self.depth_encoder(rel[:, None])
        if metric:
            out = out + self.depth_scale_encoder(log_norm[:, None])[:, None]
        return out * given[:, None, None]  # a view with no depth is given none

    def _pose_tokens(self, cam2world: torch.Tensor, metric: bool) -> torch.Tensor:
        """Known poses (B, V, 4, 4) -> one vector per view (B, V, D) (see :func:`pose_inputs`)."""
        rel_q, rel_t, log_factor = pose_inputs(cam2world)
        out = self.cam_rot_encoder(rel_q) + self.cam_trans_encoder(rel_t)
        if metric:
            out = out + self.cam_trans_scale_encoder(log_factor[:, None, None].expand(-1, rel_q.shape[1], 1))
        return out


def depth_inputs(depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What MapAnything's depth encoders see of known depth along the rays (N, H, W), 0 unknown: each view's
    depth over its mean known depth, log1p (N, H, W); the log of that mean (N,), for the scale encoder; and
    which views hold any depth (N,)."""
    known = depth > 0
    norm = ((depth * known).sum((1, 2)) / (known.sum((1, 2)) + 1e-8)).clamp(min=1e-8)
    return torch.log1p(depth / norm[:, None, None]), torch.log(norm + 1e-8), known.flatten(1).any(1)


def pose_inputs(cam2world: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What MapAnything's pose encoders see of known poses (B, V, 4, 4): each camera relative to the first,
    its rotation as a quaternion (B, V, 4) (x, y, z, w) and its translation over the mean length of the
    non-zero relative translations (B, V, 3); and the log of that mean (B,), for the scale encoder."""
    q = matrix_to_quaternion(cam2world[..., :3, :3])
    q0_inv = q[:, :1] * torch.tensor([-1.0, -1.0, -1.0, 1.0], device=q.device) / (q[:, :1] ** 2).sum(-1, keepdim=True)
    rel_q = quaternion_multiply(q0_inv.expand_as(q), q)
    R0_inv = quaternion_to_matrix(q0_inv)  # (B, 1, 3, 3)
    t = cam2world[..., :3, 3]
    rel_t = torch.einsum("bvij,bvj->bvi", R0_inv.expand(-1, t.shape[1], -1, -1), t - t[:, :1])
    lengths = rel_t.norm(dim=-1)
    factor = (lengths.sum(1) / ((lengths > 0).sum(1) + 1e-8)).clamp(min=1e-8)
    return rel_q, rel_t / factor[:, None, None], torch.log(factor + 1e-8)


def decode(dense: torch.Tensor, pose: torch.Tensor, scale: torch.Tensor) -> PointMapOutput:
    """Raw head outputs -> :class:`PointMapOutput` (MapAnything's adaptors and output conversion).

    dense (B, V, H, W, 6): ray (normalised), log depth along the ray, confidence
    (1 + exp), mask logit; pose (B, V, 7): translation, quaternion (normalised);
    scale (B,) multiplies depths, points and translations.
    """
    rays = dense[..., :3] / dense[..., :3].norm(dim=-1, keepdim=True).clamp(min=1e-8)
    s = scale.view(-1, 1, 1, 1)
    depth_ray = dense[..., 3].exp() * s
    conf = 1.0 + dense[..., 4].exp()
    quats = pose[..., 3:] / pose[..., 3:].norm(dim=-1, keepdim=True).clamp(min=1e-8)
    R = quaternion_to_matrix(quats)
    t = pose[..., :3] * scale.view(-1, 1, 1)
    pts_cam = rays * depth_ray[..., None]
    pts = torch.einsum("bvij,bvhwj->bvhwi", R, pts_cam) + t[:, :, None, None, :]
    cam2world = torch.zeros(*R.shape[:2], 4, 4, dtype=R.dtype, device=R.device)
    cam2world[..., :3, :3], cam2world[..., :3, 3], cam2world[..., 3, 3] = R, t, 1.0
    return PointMapOutput(pts, pts_cam, rays=rays, depth_ray=depth_ray, depth_z=pts_cam[..., 2], conf=conf,
                          mask_logits=dense[..., 5], cam2world=cam2world, quats=quats, scale=scale)
