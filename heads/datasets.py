"""Readers for depth and segmentation data layouts, and the training augmentations."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pixio_cli.errors import InputError, UsageError
from pixio_cli.images import IMAGENET_MEAN, IMAGENET_STD, is_image, read_image

from heads.sequences import depth_from_raw, require_depth_scale

IGNORE = 255

# CamVid's 11 classes (labels 0-10; 11 is void) and the SegNet tutorial's colours.
CAMVID_CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
                  "pedestrian", "bicyclist"]
CAMVID_PALETTE = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
                  [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192]]

LOVEDA_CLASSES = ["background", "building", "road", "water", "barren", "forest", "agriculture"]
VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]
EIGEN_CROP = (45, 471, 41, 601)  # NYUv2 evaluation crop (top, bottom, left, right)


def voc_palette(n: int = 256) -> np.ndarray:
    """The Pascal VOC colour map: class bits spread over the high bits of R, G and B."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


@dataclass
class Layout:
    """Pairs of (image, target) files and how to read the target."""

    pairs: list[tuple[Path, Path]]
    task: str
    depth_scale: float = 1.0  # stored value / depth_scale = metres
    label_map: dict[int, int] = field(default_factory=dict)  # stored label -> class id (others unchanged)
    label_shift: int = 0  # added to every stored label before label_map (ADE20K, LoveDA store 1-based ids)
    palette_labels: bool = False  # labels stored as colours of ``palette`` (Pascal VOC's palette PNGs)
    classes: list[str] | None = None
    palette: list[list[int]] | None = None
    crop_box: tuple[int, int, int, int] | None = None  # evaluation crop (top, bottom, left, right), e.g. Eigen
    intrinsics: dict | None = None
    invalid: int | None = None  # a stored depth value meaning "no measurement" (7-Scenes: 65535)

    def read_target(self, path: Path) -> np.ndarray:
        """The target image at ``path``: depth as stored, or class indices (palette PNGs mapped back)."""
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise InputError(f"{path}: cannot read the target image")
        if self.palette_labels and raw.ndim == 3:  # OpenCV expands palette PNGs to colours: map them back
            rgb = raw[..., ::-1].astype(np.int64)
            codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
            pal = voc_palette().astype(np.int64)
            lut = {int((r << 16) | (g << 8) | b): i for i, (r, g, b) in enumerate(pal)}
            uniq, inv = np.unique(codes, return_inverse=True)
            raw = np.array([lut.get(int(c), IGNORE) for c in uniq], np.int64)[inv].reshape(codes.shape)
        if self.task == "depth":
            return depth_from_raw(raw, self.depth_scale, self.invalid)
        if raw.ndim == 3:
            if (raw[..., 1:3] != raw[..., :1]).any():  # (a 4th channel is alpha: a grey label may carry one)
                raise InputError(f"{path}: a colour label map; labels are single-channel class ids (pixel value = "
                                 "class id)")
            raw = raw[..., 0]
        raw = raw.astype(np.int64)
        out = raw + self.label_shift
        for src, dst in self.label_map.items():
            out[raw == src] = dst
        known = out[out != IGNORE]
        if self.classes is not None and known.size and not 0 <= known.min() <= known.max() < len(self.classes):
            bad = int(known.max() if known.max() >= len(self.classes) else known.min())
            raise InputError(f"{path}: label {bad}, but the dataset has {len(self.classes)} classes "
                             f"(ids 0-{len(self.classes) - 1}, {IGNORE} ignored)")
        return out.astype(np.uint8)


def _stems(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if is_image(p)}


def _split_pairs(root: Path, split: str, default: list[tuple[Path, Path]] | None = None) -> list[tuple[Path, Path]]:
    """Pairs from ``<root>/<split>.txt`` (lines "image target", relative to root, as the official
    split files), else ``default``."""
    listing = root / f"{split}.txt"
    if listing.exists():
        pairs = []
        for line in listing.read_text().splitlines():
            if line.strip():
                img, target = line.split()[:2]
                pairs.append((root / img, root / target))
        return pairs
    if default is None:
        raise InputError(f"{root}: no {split}.txt split file (lines 'image target', relative to {root})")
    return default


# What each layout expects, for the message when a split turns out empty.
LAYOUTS = {
    "7scenes": "<scene>/seq-XX/frame-NNNNNN.color.png + .depth.png with TrainSplit.txt/TestSplit.txt, or a flat "
               "folder of frame-NNNNNN.color.jpg + .depth.png whose frames >= 800 are the val split",
    "generic-rgbd": "images/ + depth/ (+ poses/, K.txt), optionally under <split>/",
    "nyuv2": "official_splits/{train,test}/**/rgb_*.jpg + sync_depth_*.png, or <split>.txt",
    "kitti": "a <split>.txt split file of 'image depth' lines",
    "generic-depth": "images/ + depth/ with matching file names",
    "camvid": "<split>/ images + <split>annot/ labels",
    "ade20k": "images/{training,validation}/ + annotations/{training,validation}/",
    "voc": "JPEGImages/ + SegmentationClass/ + ImageSets/Segmentation/<split>.txt",
    "loveda": "Train|Val/[Train|Val/]Urban|Rural/images_png + masks_png",
    "generic-segment": "images/ + labels/ with matching file names, and classes.txt",
}


def find_layout(dataset: str, root: str | Path, split: str, depth_scale: float | None = None,
                classes_file: str | None = None) -> Layout:
    """The pairs of a named layout: 7scenes, generic-rgbd, nyuv2, kitti, generic-depth; camvid, ade20k, voc,
    loveda, generic-segment. ``split`` is train or val. A split without pairs is an error naming the folder,
    the layout it expected and the split."""
    if split not in ("train", "val", "test"):
        raise UsageError(f"--split {split}: expected train, val or test")
    if split == "test":
        if dataset in ("nyuv2", "7scenes"):  # their held-out split is the official test split
            split = "val"
        elif dataset != "camvid":
            raise UsageError(f"--split test: the {dataset} layout has no test split here (train and val)")
    layout = _find_layout(dataset, root, split=split, depth_scale=depth_scale, classes_file=classes_file)
    if not layout.pairs:
        raise InputError(f"--data {root}: no image/target pairs for the {split} split of the {dataset} layout "
                         f"(expected {LAYOUTS.get(dataset, dataset)})")
    return layout


def _find_layout(dataset: str, root: str | Path, split: str, depth_scale: float | None = None,
                 classes_file: str | None = None) -> Layout:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--data {root}: not a folder")
    if dataset == "nyuv2":
        sub = root / "official_splits" / ("train" if split == "train" else "test")
        found = [(p, p.with_name(p.name.replace("rgb_", "sync_depth_").replace(".jpg", ".png")))
                 for p in sorted(sub.rglob("rgb_*.jpg"))]
        return Layout(_split_pairs(root, split, found), "depth", 1000.0, crop_box=EIGEN_CROP)
    if dataset == "kitti":
        return Layout(_split_pairs(root, split), "depth", 256.0)
    if dataset == "ade20k":
        sub = "training" if split == "train" else "validation"
        labels = _stems(root / "annotations" / sub) if (root / "annotations" / sub).is_dir() else {}
        found = [(p, labels[s]) for s, p in _stems(root / "images" / sub).items() if s in labels] if labels else []
        return Layout(_split_pairs(root, split, found), "segment", label_shift=-1, label_map={0: IGNORE},
                      classes=[f"ade_{i}" for i in range(150)])
    if dataset == "voc":
        ids_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        found = None
        if ids_file.exists():
            ids = [i.strip() for i in ids_file.read_text().splitlines() if i.strip()]
            found = [(root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in ids]
        return Layout(_split_pairs(root, split, found), "segment", classes=VOC_CLASSES,
                      palette=voc_palette(21).tolist(), palette_labels=True)
    if dataset == "loveda":
        part = "Train" if split == "train" else "Val"
        found = []
        for area in ("Urban", "Rural"):
            for base in (root / part / area, root / part / part / area):
                if (base / "images_png").is_dir():
                    masks = _stems(base / "masks_png")
                    found += [(p, masks[s]) for s, p in _stems(base / "images_png").items() if s in masks]
        return Layout(_split_pairs(root, split, found), "segment", label_shift=-1, label_map={0: IGNORE},
                      classes=LOVEDA_CLASSES)
    if dataset in ("7scenes", "generic-rgbd"):
        from heads.sequences import find_sequences

        seqs = find_sequences(dataset, root, split, depth_scale)
        frames = [f for seq in seqs for f in seq.frames]
        intr = None
        if frames and frames[0].K is not None:
            import cv2

            k = frames[0].K
            h, w = cv2.imread(str(frames[0].image)).shape[:2]
            intr = {"fx": float(k[0, 0]), "fy": float(k[1, 1]), "cx": float(k[0, 2]), "cy": float(k[1, 2]),
                    "width": w, "height": h}
        scale = seqs[0].depth_scale if seqs else 1000.0
        return Layout([(f.image, f.depth) for f in frames], "depth", scale, intrinsics=intr,
                      invalid=seqs[0].invalid if seqs else None)
    if dataset == "camvid":
        img_dir, lab_dir = root / split, root / f"{split}annot"
        if not lab_dir.is_dir():
            raise InputError(f"{root}: no {split}/ and {split}annot/ folders (CamVid layout)")
        labels = _stems(lab_dir)
        pairs = [(p, labels[s]) for s, p in _stems(img_dir).items() if s in labels]
        return Layout(pairs, "segment", label_map={11: IGNORE}, classes=CAMVID_CLASSES, palette=CAMVID_PALETTE)
    if dataset == "generic-depth":
        imgs, targets = _stems(root / "images"), _stems(root / "depth")
        require_depth_scale(depth_scale, "generic-depth")
        found = [(imgs[s], targets[s]) for s in sorted(imgs) if s in targets]
        return Layout(_split_pairs(root, split, found), "depth", depth_scale)
    if dataset == "generic-segment":
        imgs, targets = _stems(root / "images"), _stems(root / "labels")
        names = None
        cf = Path(classes_file) if classes_file else root / "classes.txt"
        if cf.exists():
            names = [line.strip() for line in cf.read_text().splitlines() if line.strip()]
        if names is None:
            raise UsageError(f"--dataset generic-segment needs a class-names file ({cf} or --classes)")
        if not names:
            raise UsageError(f"{cf} lists no class names (one per line)")
        found = [(imgs[s], targets[s]) for s in sorted(imgs) if s in targets]
        return Layout(_split_pairs(root, split, found), "segment", classes=names)
    raise UsageError(f"--dataset {dataset}: expected 7scenes, generic-rgbd, nyuv2, kitti, generic-depth, camvid, ade20k, voc, "
                     "loveda or generic-segment")


def normalise(img: np.ndarray) -> torch.Tensor:
    """An RGB uint8 image (H, W, 3) as a (3, H, W) float tensor, ImageNet-normalised."""
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


class TrainCrops(Dataset):
    """Random training crops: depth (flip + crop) and segmentation (rescale 0.5-2, crop, flip), as the
    official recipe. Indexed by sample position in the training stream."""

    def __init__(self, layout: Layout, crop: int, seed: int = 0, total: int | None = None) -> None:
        if not layout.pairs:
            raise InputError("the training split has no image/target pairs")
        self.layout, self.crop, self.seed = layout, crop, seed
        # Sample position -> image, drawn once: a resumed run sees the same stream.
        n = total or len(layout.pairs)
        self.order = np.random.default_rng(seed).integers(0, len(layout.pairs), n)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, pos: int):
        rng = np.random.default_rng([self.seed, pos])  # the crop depends on the position, not the image
        img_path, target_path = self.layout.pairs[self.order[pos]]
        img, target = read_image(img_path), self.layout.read_target(target_path)
        if target.shape != img.shape[:2]:
            target = cv2.resize(target, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
        if self.layout.task == "segment":
            s = rng.uniform(0.5, 2.0)
            size = (max(1, int(img.shape[1] * s)), max(1, int(img.shape[0] * s)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
            target = cv2.resize(target, size, interpolation=cv2.INTER_NEAREST)
        img, target = self._pad(img, target)
        y = int(rng.integers(0, img.shape[0] - self.crop + 1))
        x = int(rng.integers(0, img.shape[1] - self.crop + 1))
        img, target = img[y:y + self.crop, x:x + self.crop], target[y:y + self.crop, x:x + self.crop]
        if rng.random() < 0.5:
            img, target = img[:, ::-1], target[:, ::-1]
        t = torch.from_numpy(np.ascontiguousarray(target))
        return normalise(np.ascontiguousarray(img)), t.float() if self.layout.task == "depth" else t.long()

    def _pad(self, img: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ph, pw = max(0, self.crop - img.shape[0]), max(0, self.crop - img.shape[1])
        if ph or pw:
            img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
            fill = 0 if self.layout.task == "depth" else IGNORE
            target = cv2.copyMakeBorder(target, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=fill)
        return img, target
