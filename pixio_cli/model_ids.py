"""Names a user can pass to ``--model`` and where they come from: public checkpoints (the Hugging
Face hub, cached), the small bundled ones, or paths.

Kept apart from the checkpoint reader and free of torch, so the command line
shows defaults at once and a model that cannot be had fails before the slow
imports.
"""

from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError

WEIGHTS_DIR = Path(__file__).parent / "weights"

# Public checkpoints: model id -> (Hugging Face repo, file, size preset).
HUB_MODELS: dict[str, tuple[str, str, str]] = {
    f"pixio-vit{s}16": (f"facebook/pixio-vit{s}16", f"pixio_vit{s}16.pth", f"{s}16")
    for s in ("b", "l", "h", "1b", "5b")
}

# Public point-map models (MapAnything on a Pixio encoder): model id -> (repo, file). The official
# loader (facebookresearch/pixio, map_anything/model.py) asks the hub for model.pth; a safetensors copy, if
# the repo holds one, is taken first (no pickle).
POINTMAP_MODELS: dict[str, tuple[str, str]] = {
    "pixio-vith16-mapanything": ("facebook/pixio-vith16-mapanything", "model.safetensors|model.pth"),
}

# Bundled small models shipped inside the package (see README, "Bundled weights").
BUNDLED: dict[str, str] = {"pixio-tiny": "pixio-tiny.safetensors"}
DEFAULT_MODEL = "pixio-tiny"

# Bundled point-map models (see README, "Bundled weights"), and the default of `pixio recon3d`.
BUNDLED_POINTMAPS = {"pointmap-tiny": "pointmap-tiny-7scenes.safetensors"}
DEFAULT_POINTMAP = "pointmap-tiny"
POINTMAP_SHORT_SIDE = 384  # MapAnything's default input: 512x384 for 4:3 frames

# Bundled heads, and the default head of each dense task.
BUNDLED_HEADS = {"depth-tiny": "depth-tiny-7scenes.safetensors", "segment-tiny": "segment-tiny-camvid.safetensors"}
DEFAULT_HEAD = {"depth": "depth-tiny", "segment": "segment-tiny"}


def bundled_file(name: str) -> Path | None:
    """Where the bundled model, point-map model or head ``name`` lives (None for other names)."""
    for table in (BUNDLED, BUNDLED_POINTMAPS, BUNDLED_HEADS):
        if name in table:
            return WEIGHTS_DIR / table[name]
    return None


def bundled_path(name: str, what: str, instead: str) -> Path:
    """The file of the bundled ``name``; a one-line error naming what to pass ``instead`` when this
    installation lacks it."""
    path = bundled_file(name)
    if path is None or not path.exists():
        raise CheckpointError(f"the bundled {what} {name!r} is not in this installation ({path} is missing); "
                              f"pass --model {instead}")
    return path


def resolve(source: str) -> Path:
    """Turn a model id, bundled name or path into a local file or folder."""
    if source in BUNDLED:
        return bundled_path(source, "model", "with a checkpoint path or a public id such as pixio-vitb16")
    if source in BUNDLED_POINTMAPS:
        return bundled_path(source, "point-map model",
                            "pixio-vith16-mapanything or a checkpoint path")
    if source in HUB_MODELS:
        return _download(*HUB_MODELS[source][:2])
    if source in POINTMAP_MODELS:
        return _download(*POINTMAP_MODELS[source])
    path = Path(source).expanduser()
    if path.exists():
        return path
    known = ", ".join([*BUNDLED, *HUB_MODELS, *POINTMAP_MODELS, *BUNDLED_POINTMAPS])
    raise CheckpointError(f"no such model file or id: {source!r} (known ids: {known})")


def cached(repo: str, filenames: str) -> Path | None:
    """The local copy of a public checkpoint in the Hugging Face cache (``filenames`` as for
    :func:`_download`: the first one cached), or None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames.split("|"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def whole(path: Path) -> bool:
    """Whether a checkpoint file is as long as its own format says: a safetensors file's header names where
    its last tensor ends, and a PyTorch zip (.pth, .pt, .bin) ends with its central directory."""
    import json
    import struct
    import zipfile

    try:
        size = path.stat().st_size
        if path.suffix == ".safetensors":
            with open(path, "rb") as f:
                n = struct.unpack("<Q", f.read(8))[0]
                header = json.loads(f.read(n)) if 0 < n <= size - 8 else None
            if not isinstance(header, dict):
                return False
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
            return size == 8 + n + max(ends, default=0)
        if path.suffix in (".pth", ".pt", ".bin"):
            return zipfile.is_zipfile(path)
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return False
    return True


def _download(repo: str, filenames: str) -> Path:
    """Fetch a public checkpoint into the Hugging Face cache (once). ``filenames``: one name, or names
    separated by ``|`` tried in order (the first the repo holds is taken).

    Offline, an uncached file fails at once with one line (no retries, no hub
    warnings): the cache is looked up first, then the hub is probed once.
    """
    import logging

    from huggingface_hub import constants, hf_hub_download

    names = filenames.split("|")
    found = cached(repo, filenames)
    if found is not None and whole(found):
        return found
    hint = (f"download it where there is network (hf download {repo} {names[-1]}) "
            "and pass the file's path with --model")
    cut = found is not None  # a cached file cut short (a disk that filled, a copied cache): fetched again
    if constants.HF_HUB_OFFLINE or not _reachable(constants.ENDPOINT):
        if cut:
            raise CheckpointError(f"the cached {found.name} of {repo} ({found}, {found.stat().st_size} bytes) is "
                                  "cut short and the hub cannot be reached to fetch it again; remove it, and "
                                  f"{hint}")
        raise CheckpointError(f"{' or '.join(names)} of {repo} is not in the Hugging Face cache and the hub cannot "
                              f"be reached; {hint}")
    from huggingface_hub import errors

    # the repo lacks that file: RemoteEntryNotFoundError in huggingface_hub 1.x and later, EntryNotFoundError before
    missing = getattr(errors, "RemoteEntryNotFoundError", None) or errors.EntryNotFoundError
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    for i, filename in enumerate(names):
        try:
            got = _within_deadline(lambda: Path(hf_hub_download(repo_id=repo, filename=filename, force_download=cut)),
                                   _cache_folder(repo), f"{constants.ENDPOINT} ({repo})")
            if not whole(got):
                raise CheckpointError(f"{got} is cut short ({got.stat().st_size} bytes) after the download")
            return got
        except CheckpointError as e:
            raise CheckpointError(f"{e}; {hint}") from None
        except Exception as e:  # gated, removed, network lost midway, ...
            if isinstance(e, missing) and i + 1 < len(names):
                continue  # the repo has not this name: the next one
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"could not get {filename} from {repo} ({first}); {hint}") from None
    raise CheckpointError(f"none of {', '.join(names)} in {repo}; {hint}")


STALL = 30.0  # seconds a download may go without a byte before it is given up (PIXIO_HUB_STALL to change)


def _cache_folder(repo: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--"))


def _within_deadline(fetch, folder: Path, where: str, stall: float | None = None):
    """``fetch()`` on a thread, given up with one line when ``folder`` (where the download lands) has not
    grown for ``stall`` seconds: a proxy or firewall that accepts the connection and never answers held
    huggingface_hub for minutes (its metadata request retries five times at 60 s each)."""
    import threading
    import time

    import os

    stall = float(os.environ.get("PIXIO_HUB_STALL", STALL)) if stall is None else stall
    result: list = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fetch())
        except BaseException as e:  # handed to the caller
            failure.append(e)

    def size() -> int:
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0

    thread = threading.Thread(target=run, daemon=True)  # left behind on a stall: the process ends anyway
    thread.start()
    last, moved = size(), time.monotonic()
    while thread.is_alive():
        thread.join(0.5)
        now = size()
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > stall:
            raise CheckpointError(f"{where} sent nothing for {stall:.0f} s (a proxy or firewall that holds the "
                                  "connection?); set HF_ENDPOINT, or try again")
    if failure:
        raise failure[0]
    return result[0]


def _reachable(url: str, timeout: float = 1.5) -> bool:
    """Whether a TCP connection to the URL's host opens within ``timeout`` (DNS included)."""
    import socket
    import threading
    from urllib.parse import urlparse

    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # a hanging DNS lookup must not hold us
    thread.start()
    thread.join(timeout + 0.5)
    return bool(ok)
