"""The one image loader (OpenCV) and the resize policy every command shares."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError, UsageError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pnm", ".exr", ".hdr"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def is_image(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an image by its extension."""
    return Path(path).suffix.lower() in IMAGE_EXTS


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a video by its extension."""
    return Path(path).suffix.lower() in VIDEO_EXTS


_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_image(data: bytes | np.ndarray, name: str = "<bytes>", reduce: int = 1) -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 array (H, W, 3).

    Handles EXIF orientation, grayscale, alpha (composited over white, since
    fully transparent pixels often hold arbitrary colours), 16-bit and float
    images (scaled to 8 bits), palette PNGs and CMYK JPEGs. ``reduce`` (2, 4
    or 8) lets libjpeg decode a JPEG at that fraction of its size, which is
    several times faster for large photos headed for a small input size.
    """
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if buf.size == 0:
        raise InputError(f"{name}: empty file")
    if buf[:2].tobytes() == b"\xff\xd8":
        # JPEG: always 8-bit without alpha; IMREAD_COLOR applies EXIF orientation and converts CMYK.
        img = cv2.imdecode(buf, _REDUCED.get(reduce, cv2.IMREAD_COLOR))
    else:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if img is not None and not (img.ndim == 3 and img.shape[2] == 4) and _may_have_exif(buf):
            # IMREAD_UNCHANGED ignores orientation; decode again the way that applies it.
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise InputError(f"{name}: not a readable image (corrupt or unsupported format)")
    return _to_rgb8(img)


def _may_have_exif(buf: np.ndarray) -> bool:
    head = buf[:8].tobytes()
    if head.startswith(b"\x89PNG"):
        return b"eXIf" in buf.tobytes()
    return True  # TIFF, WebP and others may carry orientation


def _to_rgb8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 1:
        return cv2.cvtColor(img[..., 0], cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        alpha = img[..., 3:4].astype(np.float32) / 255.0
        rgb = img[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return cv2.cvtColor((rgb + 0.5).astype(np.uint8), cv2.COLOR_BGR2RGB)
    return cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)


def read_bytes(path: str | os.PathLike) -> np.ndarray:
    """A file's bytes, with a one-line :class:`InputError` when it cannot be read."""
    path = Path(path)
    try:
        return np.fromfile(path, dtype=np.uint8)  # also works for non-ASCII paths, unlike cv2.imread
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not an image") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); :class:`InputError` if it cannot be used."""
    return decode_image(read_bytes(Path(path)), str(path))


def jpeg_size(buf: np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a JPEG's start-of-frame header, without decoding; None if not found."""
    data = buf.tobytes() if isinstance(buf, np.ndarray) else bytes(buf)
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (data[i + 5] << 8) | data[i + 6], (data[i + 7] << 8) | data[i + 8]
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return None


MAX_SIDE = 16384  # the largest side --resize may ask for: 1M patch tokens at 16 px, far past any GPU


@dataclass(frozen=True)
class ResizePolicy:
    """How images are sized before the encoder: both sides a multiple of 16 (``crop``: crop x crop).

    ``short``: scale so the short side is about N (default 256, the pretraining size);
    the long side is capped at 4N, so a 7x1000 sliver does not become 256x36000.
    ``size``: a fixed (width, height). ``native``: keep the size, rounded to 16.
    ``crop`` (with ``short``): torchvision's ``Resize(short)`` then ``CenterCrop(crop)``,
    the evaluation transform of classifiers: the short side scaled exactly and the long
    side truncated (no rounding, no aspect change), then the central crop x crop square.
    """

    short: int | None = 256
    size: tuple[int, int] | None = None
    multiple: int = 16
    crop: int | None = None

    @classmethod
    def parse(cls, spec: str | int | None, multiple: int = 16) -> "ResizePolicy":
        """``256`` (short side), ``448x320`` (width x height) or ``native``."""
        if spec is None or spec == "":
            return cls(multiple=multiple)
        s = str(spec).strip().lower()
        try:
            if s == "native":
                return cls(short=None, multiple=multiple)
            if "x" in s:
                w, h = (int(v) for v in s.split("x"))
                if w <= 0 or h <= 0:
                    raise ValueError
                if max(w, h) > MAX_SIDE:
                    raise UsageError(f"--resize {spec}: at most {MAX_SIDE} pixels a side (the encoder's cost grows "
                                     "with the square of the pixels)")
                policy = cls(short=None, size=(w, h), multiple=multiple)
                rh, rw = policy.target(h, w)
                if max(rh, rw) > 4 * min(rh, rw):
                    raise UsageError(f"--resize {spec}: {rw}x{rh} after rounding to multiples of {multiple} is "
                                     "wider than 4:1; the long side may be at most 4x the short side")
                return policy
            n = int(s)
            if n <= 0:
                raise ValueError
            if n > MAX_SIDE // 4:  # the long side may reach 4x the short one
                raise UsageError(f"--resize {spec}: a short side of at most {MAX_SIDE // 4} (the long side may reach "
                                 f"4x it, and the encoder's cost grows with the square of the pixels)")
            return cls(short=n, multiple=multiple)
        except ValueError:
            raise UsageError(f"--resize {spec!r}: expected a short side (256), WIDTHxHEIGHT (448x320) or 'native'") from None

    def target(self, height: int, width: int) -> tuple[int, int]:
        """Output (height, width) for an input of the given size."""
        m = self.multiple
        if self.crop is not None and self.short is not None:
            if width <= height:
                return int(self.short * height / width), self.short
            return self.short, int(self.short * width / height)
        if self.size is not None:
            w, h = self.size
        elif self.short is not None:
            scale = self.short / min(height, width)
            h, w = min(height * scale, 4 * self.short), min(width * scale, 4 * self.short)
        else:
            h, w = height, width
        return max(m, int(round(h / m)) * m), max(m, int(round(w / m)) * m)

    def apply(self, img: np.ndarray, orig_hw: tuple[int, int]) -> np.ndarray:
        """``img`` (the image of original size ``orig_hw``, maybe decoded smaller) sized by this policy."""
        out = resize_image(img, self.target(*orig_hw))
        if self.crop is None:
            return out
        h, w = out.shape[:2]
        if min(h, w) < self.crop:
            raise InputError(f"{w}x{h} after resizing is smaller than the {self.crop}x{self.crop} crop")
        top, left = int(round((h - self.crop) / 2)), int(round((w - self.crop) / 2))
        return out[top:top + self.crop, left:left + self.crop]

    def describe(self) -> str:
        """The policy in words, as the run ledger and the summaries say it."""
        if self.crop is not None:
            return f"short side {self.short}, central {self.crop}x{self.crop}"
        if self.size is not None:
            return f"{self.size[0]}x{self.size[1]}"
        return f"short side {self.short}" if self.short is not None else "native"


def resize_image(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize to (height, width): area averaging when shrinking, bicubic when enlarging."""
    h, w = hw
    if img.shape[:2] == (h, w):
        return img
    shrink = h * w < img.shape[0] * img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def load_for_model(path: str | os.PathLike, policy: "ResizePolicy") -> tuple[np.ndarray, tuple[int, int]]:
    """Read and resize one image file for the encoder; returns (RGB uint8 (h, w, 3), original (H, W))."""
    return decode_for_model(read_bytes(Path(path)), str(path), policy)


def decode_for_model(buf: np.ndarray | bytes, name: str, policy: "ResizePolicy") -> tuple[np.ndarray, tuple[int, int]]:
    """Decode encoded bytes and resize them by ``policy``; returns (image, original (H, W)).

    Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that still leaves
    at least the target size, so a 4000x3000 photo headed for 256 px is not
    decoded in full.
    """
    buf = np.frombuffer(buf, np.uint8) if isinstance(buf, (bytes, bytearray)) else buf
    size = jpeg_size(buf)
    factor = 1
    if size is not None:
        th, tw = policy.target(*size)
        factor = next((f for f in (8, 4, 2) if size[0] // f >= th and size[1] // f >= tw), 1)
    img = decode_image(buf, name, reduce=factor)
    orig = img.shape[:2]
    if factor > 1 and size is not None:  # report the full size, in the decoded (EXIF-rotated) orientation
        orig = size if (img.shape[0] >= img.shape[1]) == (size[0] >= size[1]) else (size[1], size[0])
    return policy.apply(img, orig), orig
