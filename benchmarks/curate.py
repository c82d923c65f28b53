"""Images/s of `pixio curate`'s MAE-loss statistic against a plain loop in the same run.

Both score the same photos with the same MAE (random weights) and the same K
fixed masks on the central crop. The reference is written here, apart from our
code: the model called on each batch and each mask in turn, in fp32 (the
official precision on a CPU; bf16 autocast on CUDA), under ``torch.no_grad``.
Ours is the Curator through the engine at its default precision, and forced to
the reference's precision (the same-precision ratio). The outside reference is
the same statistic computed with transformers' ``ViTMAEForPreTraining`` of the
same shape (its own random weights; the rate is compared, not the losses).

    python -m benchmarks.curate --size t16 --images 64
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from pixio_cli.encoder import size_config
from pixio_cli.engine import Engine
from pixio_cli.images import ResizePolicy, load_for_model
from pretrain.curation import Curator, Settings
from pretrain.mae import MAEConfig, PixioMAE

from .common import emit, environment, paired_rates, matmul_peak, photos


def transformers_mae(cfg: MAEConfig) -> torch.nn.Module:
    """transformers' ``ViTMAEForPreTraining`` of the same shape (random weights), for inference."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    e = cfg.encoder
    torch.manual_seed(0)
    return ViTMAEForPreTraining(ViTMAEConfig(
        hidden_size=e.embed_dim, num_hidden_layers=e.depth, num_attention_heads=e.num_heads,
        intermediate_size=int(e.mlp_ratio * e.embed_dim), image_size=e.img_size, patch_size=e.patch_size,
        decoder_hidden_size=cfg.decoder_dim, decoder_num_hidden_layers=cfg.decoder_depth,
        decoder_num_attention_heads=cfg.decoder_heads, decoder_intermediate_size=4 * cfg.decoder_dim,
        mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss)).eval()


def transformers_loop(cfg: MAEConfig, *, masks: int, device: torch.device, bf16: bool):
    """The curation statistic as a user would compute it with transformers' ViTMAE: fixed noise per mask, the
    per-image loss from its logits and mask, on the central crop of a batch (B, 3, H, W)."""
    hf = transformers_mae(cfg).to(device)
    hf_noise = torch.rand(masks, cfg.encoder.grid ** 2, generator=torch.Generator().manual_seed(0)).to(device)
    side = cfg.encoder.img_size

    def with_transformers(x: torch.Tensor) -> dict[str, torch.Tensor]:
        top, left = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
        crop = x[..., top:top + side, left:left + side]
        total = 0.0
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            for k in range(masks):
                out = hf(pixel_values=crop, noise=hf_noise[k:k + 1].expand(x.shape[0], -1))
                target = hf.patchify(crop)
                target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
                per_patch = ((out.logits.float() - target) ** 2).mean(-1)
                total = total + (per_patch * out.mask).sum(1) / out.mask.sum(1)
        return {"mae_loss_raw": total / masks}

    return with_transformers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="t16")
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--masks", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iters", type=int, default=2, help="alternating timed passes of each model; the best counts")
    args = ap.parse_args()

    cfg = MAEConfig(dataclasses.replace(size_config(args.size), img_size=args.img_size), decoder_depth=3,
                    decoder_dim=192, decoder_heads=6, mask_grid=2)
    torch.manual_seed(0)
    mae = PixioMAE(cfg).eval()
    ours_engine = Engine(args.device, None, batch_size=args.batch, workers=0)
    ref_precision = "bf16" if ours_engine.device.type == "cuda" else "fp32"
    same_engine = Engine(args.device, ref_precision, batch_size=args.batch, workers=0)
    settings = Settings(model="random", model_config=cfg.to_dict(), resolution=args.img_size, masks=args.masks,
                        seed=0, precision="")
    ours = Curator(ours_engine.prepare(mae), ours_engine, settings, ".")
    torch.manual_seed(0)
    same = Curator(same_engine.prepare(PixioMAE(cfg).eval()), same_engine, settings, ".")
    torch.manual_seed(0)
    plain_model = PixioMAE(cfg).eval().to(ours_engine.device)
    noise = ours.noise.to(ours_engine.device)  # the same fixed masks

    def plain(x: torch.Tensor) -> dict[str, torch.Tensor]:
        """A user's loop: the central crop, each mask in turn, the loss per image averaged."""
        side = args.img_size
        top, left = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
        crop = x[..., top:top + side, left:left + side]
        with torch.no_grad(), torch.autocast(ours_engine.device.type, torch.bfloat16,
                                             enabled=ref_precision == "bf16"):
            total = sum(plain_model(crop, noise[k:k + 1].expand(x.shape[0], -1)).loss_per_image.float()
                        for k in range(args.masks))
        return {"mae_loss_raw": total / args.masks}
    with_transformers = transformers_loop(cfg, masks=args.masks, device=ours_engine.device,
                                          bf16=ref_precision == "bf16")

    policy = ResizePolicy.parse(f"{args.img_size}x{args.img_size}")
    imgs = [load_for_model(f, policy)[0] for f in photos(args.images)]
    rng = np.random.default_rng(0)
    while len(imgs) < args.images:
        imgs.append(rng.integers(0, 255, (args.img_size, args.img_size, 3), dtype=np.uint8))
    batches = [ours_engine.to_pixels(imgs[i:i + args.batch]) for i in range(0, len(imgs), args.batch)]
    a = ours_engine.infer(ours.losses, batches[0])["mae_loss_raw"]
    b = plain(batches[0])["mae_loss_raw"]
    ours_ips, ref_ips = paired_rates(lambda x: ours_engine.infer(ours.losses, x), plain, batches=batches,
                                     rounds=args.iters, device=ours_engine.device)
    same_ips, ref2_ips = paired_rates(lambda x: same_engine.infer(same.losses, x), plain, batches=batches,
                                      rounds=args.iters, device=ours_engine.device)
    ours_t_ips, hf_ips = paired_rates(lambda x: ours_engine.infer(ours.losses, x), with_transformers, batches=batches,
                                      rounds=args.iters, device=ours_engine.device)
    same_t_ips, hf2_ips = paired_rates(lambda x: same_engine.infer(same.losses, x), with_transformers, batches=batches,
                                       rounds=args.iters, device=ours_engine.device)
    emit({"benchmark": "curate", **environment(ours_engine.device), "size": args.size, "img_size": args.img_size,
          "masks": args.masks, "batch": args.batch, "precision": str(ours_engine.dtype).removeprefix("torch."),
          "reference": "a plain loop written in the benchmark, same MAE and masks, official precision",
          "reference_precision": ref_precision,
          "ours_img_s": round(ours_ips, 2), "reference_img_s": round(ref_ips, 2), "ratio": round(ours_ips / ref_ips, 3),
          "ours_same_precision_img_s": round(same_ips, 2),
          "ratio_same_precision": round(same_ips / ref2_ips, 3),
          "max_rel_diff_loss": round(float(((a - b).abs() / b.abs()).max()), 5),
          "transformers_img_s": round(hf_ips, 2), "transformers_precision": ref_precision,
          "ratio_transformers": round(ours_t_ips / hf_ips, 3),
          "ratio_transformers_same_precision": round(same_t_ips / hf2_ips, 3),
          "matmul_peak_tflop_s": round(matmul_peak(ours_engine.device, ours_engine.dtype), 3)})


if __name__ == "__main__":
    main()
