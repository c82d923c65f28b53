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
    from heads.dense.model import BUNDLED_HEADS

    if not (WEIGHTS_DIR / BUNDLED_HEADS["depth-tiny"]).exists():
        pytest.skip("no bundled depth head")
    code, _, err = cli(["depth", str(SAMPLES / "room" / "frame-000900.color.jpg"), "-o", tmp_path / "d.png", "-q",
                        "--workers", "0"])
    assert code == 0, err
    d = cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED)
    assert d.shape == (480, 640) and 300 < np.median(d) < 6000  # a kitchen: metres, not nonsense


def _kitchen_frames(first: int, last: int, step: int) -> list[str]:
    from .test_recon3d import KITCHEN

    if not KITCHEN.exists():
        pytest.skip("shared data not present")
    return [str(KITCHEN / f"frame-{i:06d}.color.jpg") for i in range(first, last + 1, step)]


def test_bundled_pointmap_model_is_small_and_beats_its_untrained_self(shared_data):
    from heads.pointmap.checkpoint import load_pointmap
    from pixio_cli.model_ids import BUNDLED_POINTMAPS

    path = WEIGHTS_DIR / BUNDLED_POINTMAPS["pointmap-tiny"]
    assert path.stat().st_size < 15 * 2**20
    import copy

    from heads.pointmap.model import PointMapModel
    from heads.pointmap.evaluate import evaluate_pointmap
    from heads.sequences import find_sequences
    from pixio_cli.engine import Engine
    from pixio_cli.images import ResizePolicy

    model = load_pointmap("pointmap-tiny").eval()
    torch.manual_seed(0)
    untrained = PointMapModel(copy.deepcopy(model.encoder), model.cfg)  # fresh heads on the same frozen encoder
    untrained.init_weights()
    untrained.eval()
    held_out = find_sequences("7scenes", shared_data / "rgbd-7scenes-redkitchen", "val")  # frames 800-996
    engine = Engine("cpu", "fp32", batch_size=4, workers=0, progress=False)
    scores = [evaluate_pointmap(m, held_out, engine, views=4, gap=2, policy=ResizePolicy(size=(256, 192)), limit=2)
              for m in (model, untrained)]
    assert scores[0]["points_rel"] < 0.5 * scores[1]["points_rel"], scores
    assert scores[0]["scale_rel"] < 0.1, scores  # metric: the scale head learnt the kitchen's size


def test_bundled_pointmap_chunked_run_agrees_with_one_pass(cli, tmp_path):
    """15 held-out kitchen frames at once, and in chunks of 6 sharing 2: after a similarity alignment the
    camera centres agree to within 8 % (mean) and 15 % (max) of the trajectory's extent."""
    from heads import geometry as G
    from heads.pointmap.predictions import Predictions

    frames = _kitchen_frames(800, 856, 4)
    for name, extra in (("one", []), ("chunks", ["--chunk", "6", "--overlap", "2"])):
        code, _, err = cli(["recon3d", *frames, "-o", tmp_path / f"{name}.ply", "--save-predictions",
                            tmp_path / f"{name}.npz", "-q", "--workers", "0", "--no-sfm", *extra])  # the chunking itself
        assert code == 0, err
    a = Predictions.load(tmp_path / "one.npz").cam2world[:, :3, 3].astype(np.float64)
    b = Predictions.load(tmp_path / "chunks.npz").cam2world[:, :3, 3].astype(np.float64)
    s, R, t = G.umeyama(b, a)
    err = np.linalg.norm(s * b @ R.T + t - a, axis=1)
    extent = np.linalg.norm(a.max(0) - a.min(0))
    assert err.mean() < 0.08 * extent and err.max() < 0.15 * extent, (err, extent)
