"""The image loader on odd files, the resize policy, and input collection."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest

from pixio_cli.errors import InputError, UsageError
from pixio_cli.images import ResizePolicy, read_image, resize_image
from pixio_cli.inputs import collect

from .conftest import write_rgb


def _jpeg_with_orientation(img_bgr: np.ndarray, orientation: int) -> bytes:
    """A JPEG with an EXIF APP1 segment holding only the orientation tag."""
    ok, enc = cv2.imencode(".jpg", img_bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\x00" * 4
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = enc.tobytes()
    return data[:2] + app1 + data[2:]


def test_exif_rotation_is_applied(tmp_path):
    img = np.zeros((30, 50, 3), np.uint8)
    img[:, :10] = (0, 0, 255)  # red band on the left (BGR)
    (tmp_path / "rot.jpg").write_bytes(_jpeg_with_orientation(img, 6))  # 6: rotate 90 clockwise
    out = read_image(tmp_path / "rot.jpg")
    assert out.shape == (50, 30, 3)
    assert out[:10, :, 0].mean() > 200 and out[-10:, :, 0].mean() < 60  # the band is now on top, red in RGB


def test_grayscale_rgba_and_16bit(tmp_path):
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((20, 24), 77, np.uint8))
    g = read_image(tmp_path / "gray.png")
    assert g.shape == (20, 24, 3) and (g == 77).all()

    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 2] = 255  # red (BGRA)
    rgba[:5, :, 3] = 255  # top half opaque, bottom transparent
    cv2.imwrite(str(tmp_path / "alpha.png"), rgba)
    a = read_image(tmp_path / "alpha.png")
    assert tuple(a[0, 0]) == (255, 0, 0)
    assert tuple(a[9, 9]) == (255, 255, 255)  # transparent -> white background

    deep = np.full((8, 8, 3), 65535, np.uint16)
    deep[..., 0] = 257 * 10
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    d = read_image(tmp_path / "deep.png")
    assert d.dtype == np.uint8 and tuple(d[0, 0]) == (255, 255, 10)


def test_cmyk_jpeg(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    buf = io.BytesIO()
    Image.new("CMYK", (16, 12), (0, 255, 255, 0)).save(buf, "JPEG")  # pure red in CMYK
    (tmp_path / "cmyk.jpg").write_bytes(buf.getvalue())
    out = read_image(tmp_path / "cmyk.jpg")
    assert out.shape == (12, 16, 3)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60


@pytest.mark.parametrize("content, reason", [(b"", "empty"), (b"\xff\xd8\xff\xe0garbage", "not a readable image"),
                                             (b"hello, I am text", "not a readable image")])
def test_bad_files_are_input_errors(tmp_path, content, reason):
    (tmp_path / "bad.jpg").write_bytes(content)
    with pytest.raises(InputError, match=reason):
        read_image(tmp_path / "bad.jpg")
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "nope.jpg")


def test_truncated_jpeg_is_rejected(tmp_path):
    """A JPEG cut inside its image data is refused (never decoded into a half-grey picture)."""
    import cv2

    noise = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)  # no smooth, short data
    data = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    sos = data.index(b"\xff\xda")
    (tmp_path / "cut.jpg").write_bytes(data[: sos + (len(data) - sos) // 2])
    with pytest.raises(InputError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")


@pytest.mark.parametrize("hw", [(1, 1), (7, 1000), (375, 500), (4000, 3000), (17, 17)])
def test_resize_policy_multiples_of_16(hw):
    for policy in (ResizePolicy.parse("256"), ResizePolicy.parse("native"), ResizePolicy.parse("100x37")):
        h, w = policy.target(*hw)
        assert h % 16 == 0 and w % 16 == 0 and h >= 16 and w >= 16
    assert ResizePolicy.parse("256").target(375, 500) == (256, 336)  # 341.3 rounds to 336
    assert ResizePolicy.parse("448x320").target(10, 10) == (320, 448)
    assert ResizePolicy.parse("native").target(375, 500) == (368, 496)
    assert ResizePolicy.parse("256").target(7, 1000) == (256, 1024)  # long side capped at 4x
    assert resize_image(np.zeros((375, 500, 3), np.uint8), (256, 336)).shape == (256, 336, 3)


@pytest.mark.parametrize("hw", [(375, 500), (500, 375), (333, 1000), (256, 256), (4000, 3001)])
def test_crop_policy_is_torchvisions_resize_and_center_crop(hw):
    """The k-NN transform: Resize(256) keeps the aspect (the long side truncated, as torchvision does),
    CenterCrop(256) takes the same square."""
    torch = pytest.importorskip("torch")
    T = pytest.importorskip("torchvision.transforms")
    policy = ResizePolicy(short=256, crop=256)
    resized = policy.target(*hw)
    assert resized == tuple(T.Resize(256, antialias=True)(torch.zeros(1, *hw)).shape[-2:])
    img = np.random.default_rng(0).integers(0, 255, (*resized, 3), dtype=np.uint8)  # already at size: crop only
    ref = T.CenterCrop(256)(torch.from_numpy(img).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    out = policy.apply(img, hw)
    assert out.shape == (256, 256, 3) and np.array_equal(out, ref)
    assert policy.apply(np.zeros((*hw, 3), np.uint8), hw).shape == (256, 256, 3)


@pytest.mark.parametrize("spec", ["0", "abc", "12x", "-5"])
def test_resize_policy_rejects_nonsense(spec):
    with pytest.raises(UsageError):
        ResizePolicy.parse(spec)


def test_collect_folders_globs_stdin(tmp_path):
    for rel in ("a/x.jpg", "a/sub/y.png", "a/.hidden.jpg", "a/notes.txt", "b/z.jpg", "a/x.png"):
        p = tmp_path / rel
        if p.suffix == ".txt":
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("hi")
        else:
            write_rgb(p)
    items = collect([str(tmp_path / "a")])
    assert sorted(i.key for i in items) == ["sub/y", "x_jpg", "x_png"]  # same stem: kept apart
    items = collect([str(tmp_path / "*" / "*.jpg")])
    assert sorted(i.key for i in items) == ["a/x", "b/z"]
    items = collect(["-"], stdin=io.StringIO(f"{tmp_path}/a/x.jpg\n\n{tmp_path}/b/z.jpg\n"))
    assert [i.key for i in items] == ["a/x", "b/z"]
    # one rule for every input: a path that cannot be used is an item that fails with its reason
    typo = collect([str(tmp_path / "typo")])
    assert len(typo) == 1 and "no such file" in typo[0].error
    stdin_typo = collect(["-"], stdin=io.StringIO(f"{tmp_path}/typo\n"))
    assert len(stdin_typo) == 1 and "no such file" in stdin_typo[0].error
    assert "matches no file" in collect([str(tmp_path / "*.gif")])[0].error
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        collect([str(tmp_path / "empty")])
    with pytest.raises(InputError, match="no images found"):
        collect(["-"], stdin=io.StringIO(""))


def test_collect_video_frames(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for i in range(7):
        writer.write(np.full((32, 32, 3), i * 30, np.uint8))
    writer.release()
    items = collect([str(path)], every=3)
    assert [(i.key, i.frame) for i in items] == [("clip/000000", 0), ("clip/000003", 3), ("clip/000006", 6)]
    # a command that takes images only (curate) gets one failed input, not one per frame
    items = collect([str(path)], videos=False)
    assert len(items) == 1 and "a video; this command takes images" in items[0].error
    cv2.imwrite(str(tmp_path / "still.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UsageError, match="no input is a video"):  # not silently every image
        collect([str(tmp_path / "still.png")], every=3)


def test_large_jpeg_reduced_decode_matches_full(tmp_path):
    from pixio_cli.images import jpeg_size, load_for_model

    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), (2000, 1500), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / "big.jpg"), img)
    assert jpeg_size(np.fromfile(tmp_path / "big.jpg", np.uint8)) == (1500, 2000)
    policy = ResizePolicy.parse("256")
    fast, orig = load_for_model(tmp_path / "big.jpg", policy)
    full = resize_image(read_image(tmp_path / "big.jpg"), policy.target(1500, 2000))
    assert orig == (1500, 2000) and fast.shape == full.shape == (256, 336, 3)
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 3
    (tmp_path / "rot.jpg").write_bytes(_jpeg_with_orientation(img, 6))
    rot, orig = load_for_model(tmp_path / "rot.jpg", policy)
    assert orig == (2000, 1500) and rot.shape == (336, 256, 3)
