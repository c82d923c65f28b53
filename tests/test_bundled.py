"""The bundled weights load offline and do better than chance on held-out data."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from pixio_cli.checkpoints import BUNDLED, WEIGHTS_DIR, load_encoder

from .conftest import SAMPLES

pytestmark = pytest.mark.skipif(not (WEIGHTS_DIR / BUNDLED["pixio-tiny"]).exists(), reason="no bundled weights")


def test_bundled_encoder_loads_and_is_small():
    enc = load_encoder("pixio-tiny")
    assert enc.cfg.embed_dim == 192 and enc.depth == 12
    assert (WEIGHTS_DIR / BUNDLED["pixio-tiny"]).stat().st_size < 15 * 2**20


def test_bundled_mae_beats_random_init_on_held_out_photos(shared_data):
    from pixio_cli.images import IMAGENET_MEAN, IMAGENET_STD, ResizePolicy, load_for_model
    from pretrain.mae import PixioMAE, load_mae

    trained = load_mae("pixio-tiny")
    torch.manual_seed(0)
    random = PixioMAE(dataclasses.replace(trained.mae_cfg)).eval()
    photos = sorted((shared_data / "photos").glob("*.JPEG"))[-8:]  # held out of pixio-tiny's training
    side = trained.mae_cfg.encoder.img_size
    imgs = [load_for_model(p, ResizePolicy.parse(f"{side}x{side}"))[0] for p in photos]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    noise = trained.block_noise(len(imgs), (side // 16, side // 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, chance = trained(x, noise).loss.item(), random(x, noise).loss.item()
    assert ours < 0.8 * chance


def test_bundled_depth_head_runs_offline(cli, tmp_path):
    from heads.model import BUNDLED_HEADS

    if not (WEIGHTS_DIR / BUNDLED_HEADS["depth-tiny"]).exists():
        pytest.skip("no bundled depth head")
    code, _, err = cli(["depth", str(SAMPLES / "room" / "frame-000900.color.jpg"), "-o", tmp_path / "d.png", "-q",
                        "--workers", "0"])
    assert code == 0, err
    d = cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED)
    assert d.shape == (480, 640) and 300 < np.median(d) < 6000  # a kitchen: metres, not nonsense
