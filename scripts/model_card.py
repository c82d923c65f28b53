"""The bundled models' table in docs/models.md, written from what commands measured, not typed.

Each bundled weight file is evaluated on data it was not trained on, with the CLI a user would run, beside
its trivial baseline; how it was made comes from the file's own metadata (what `pixio train` and
`scripts/bundle_weights.py` stored). The figures go to ``benchmarks/results/bundled-models.json`` and the
table between the ``bundled`` markers of docs/models.md.

    python scripts/model_card.py                 # evaluate (about 3 min on 2 cores) and write both
    python scripts/model_card.py --render        # the table again from the results file
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bundled-models.json"
DOC = ROOT / "docs" / "models.md"
WEIGHTS = ROOT / "pixio_cli" / "weights"
SHARED = ROOT.parent / "shared" / "data"
KITCHEN, CAMVID = "rgbd-7scenes-redkitchen", "camvid"
SHORT = {f"../shared/data/{KITCHEN}": "redkitchen/", f"../shared/data/{CAMVID}": "camvid/"}  # the docs' names
# The one file without its command in its metadata (trained before `pixio train pointmap` stored it).
MADE_WITH = {"pointmap-tiny-7scenes": "pixio train pointmap --encoder pixio-tiny --data redkitchen/ --dataset 7scenes "
                                      "--steps 1200 --batch-size 4 --eval-limit 10 --workers 1 --save-every 100 --half"}


def pixio(*args: str) -> dict:
    """Run the CLI (fp32: the same figures on every machine) and return its JSON line."""
    cmd = [sys.executable, "-m", "pixio_cli", *args, "--precision", "fp32"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr.strip().splitlines()[-1:]}")
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}  # curate writes files and prints no JSON


def metadata(name: str) -> dict:
    """The safetensors metadata of a bundled file, JSON values decoded."""
    from safetensors import safe_open

    with safe_open(str(WEIGHTS / f"{name}.safetensors"), "pt") as f:
        meta = f.metadata() or {}
    out = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def mae_losses(model: str, folder: Path, out: Path) -> float:
    """Mean of `pixio curate`'s raw MAE loss (its fixed masks, the model's size) over the images in ``folder``."""
    pixio("curate", str(folder), "-o", str(out), "-m", model, "-q", "--workers", "0")
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return sum(r["mae_loss_raw"] for r in records) / len(records)


def random_mae(like: str, path: Path) -> str:
    """An MAE of ``like``'s shape with its initial (random) weights, as a file curate reads."""
    import torch

    from pixio_cli.checkpoints import save_safetensors
    from pretrain.mae import PixioMAE, load_mae

    trained = load_mae(like)
    torch.manual_seed(0)
    model = PixioMAE(trained.mae_cfg)
    meta = {"pixio_format": "mae", "encoder_config": trained.cfg.to_dict(), "mae_config": trained.mae_cfg.to_dict()}
    save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), meta)
    return str(path)


def measure(data: Path) -> dict:
    kitchen, camvid = data / KITCHEN, data / CAMVID
    held_out = sorted(p for p in kitchen.glob("frame-*.color.jpg") if int(p.name[6:12]) >= 800)
    held_out += sorted((camvid / "val").iterdir())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "images").mkdir()
        for i, img in enumerate(held_out):  # one folder, so one curate run scores them all
            (work / "images" / f"{i:04d}{img.suffix}").symlink_to(img)
        untrained = random_mae("pixio-tiny", work / "random.safetensors")
        encoder = {"images": len(held_out), "trained": mae_losses("pixio-tiny", work / "images", work / "a"),
                   "random_init": mae_losses(untrained, work / "images", work / "b")}
    return {
        "pixio-tiny": encoder,
        "depth-tiny-7scenes": pixio("evaluate", "depth", "--data", str(kitchen), "--dataset", "7scenes", "--json"),
        "segment-tiny-camvid": pixio("evaluate", "segment", "--data", str(camvid), "--dataset", "camvid", "--json"),
        "pointmap-tiny-7scenes": pixio("evaluate", "pointmap", "--data", str(kitchen), "--dataset", "7scenes",
                                       "--model", "pointmap-tiny", "--gap", "2", "--json"),
    }


def made(name: str) -> str:
    """How a file was made, from its metadata: the command in code, what the note adds, time and final loss."""
    import re

    prov = metadata(name).get("provenance", {})
    note = prov.get("note") or MADE_WITH.get(name, "")
    for long, short in SHORT.items():
        note = note.replace(long, short)
    cut = re.search(r" \(| on \d", note)  # the command ends where the note's prose begins
    command, rest = (note[:cut.start()], note[cut.start():]) if cut else (note, "")
    facts = [f"{prov['train_seconds'] / 60:.0f} min"] if "train_seconds" in prov else []
    if "final_loss" in prov:
        facts.append(f"final loss {prov['final_loss']:.3f}")
    return f"`{command}`{rest}" + ("; " + ", ".join(facts) if facts else "")


def cells(name: str, r: dict) -> tuple[str, str]:
    """(held-out result, trivial baseline) cells of one model."""
    f = lambda v: f"{v:.3f}"  # noqa: E731
    if name == "pixio-tiny":
        return (f"MAE loss {f(r['trained'])} on {r['images']} images it never saw (`redkitchen/` frames 800-996, "
                f"`camvid/` val; `pixio curate`'s 4 fixed masks)", f"the same MAE untrained: {f(r['random_init'])}")
    if name.startswith("depth"):
        b = r["baseline"]
        return (f"`redkitchen/` frames 800-996 (`pixio evaluate depth`): d1 {f(r['d1'])}, abs_rel {f(r['abs_rel'])}, "
                f"rmse {f(r['rmse'])} m", f"training-set mean depth everywhere: d1 {f(b['d1'])}, abs_rel "
                f"{f(b['abs_rel'])}, rmse {f(b['rmse'])} m")
    if name.startswith("segment"):
        b = r["baseline"]
        return (f"`camvid/` val (`pixio evaluate segment`): mIoU {f(r['miou'])}, pixel accuracy {f(r['pixel_acc'])}",
                f"majority class everywhere: mIoU {f(b['miou'])}, pixel accuracy {f(b['pixel_acc'])}")
    return (f"{r.get('sets')} sets of {r.get('views')} `redkitchen/` frames 2 apart from 800 on (`pixio evaluate "
            f"pointmap --gap 2`): "
            f"points_rel {f(r['points_rel'])}, depth_rel {f(r['depth_rel'])}, scale_rel {f(r['scale_rel'])}; "
            f"its cameras: pose AUC@30 {r['pose_auc30']:.1f}, ATE {f(r['ate'])} m",
            f"cameras at the origin: AUC@30 {r['origin_pose_auc30']:.1f}, ATE {f(r['origin_ate'])} m; a straight "
            f"line at constant speed: AUC@30 {r['constant_velocity_pose_auc30']:.1f}, ATE "
            f"{f(r['constant_velocity_ate'])} m")


def verdict(name: str, r: dict) -> str:
    """Whether the model beats its baseline on the figure that matters; a figure the baseline matches shows no
    skill."""
    if name == "pixio-tiny":
        return "yes" if r["trained"] < r["random_init"] else "no"
    if name.startswith("depth"):
        return "yes" if r["abs_rel"] < r["baseline"]["abs_rel"] else "no"
    if name.startswith("segment"):
        return "yes" if r["miou"] > r["baseline"]["miou"] else "no"
    best = min(r["origin_ate"], r["constant_velocity_ate"])
    return ("its cameras: yes" if r["ate"] < best else
            "its cameras: no (a trivial path is as close or closer), so `recon3d` takes cameras from matching")


def table(record: dict) -> str:
    rows = [f"Measured {record['date']} by `python scripts/model_card.py` (fp32), every figure in "
            "`benchmarks/results/bundled-models.json`; how each file was made is read from its metadata.", "",
            "| name | file | how it was made | held out | trivial baseline | beats it |", "|---|---|---|---|---|---|"]
    for name, r in record["results"].items():
        size = (WEIGHTS / f"{name}.safetensors").stat().st_size / 1e6
        held, base = cells(name, r)
        rows.append(f"| `{name.split('-7scenes')[0].split('-camvid')[0]}` | `{name}.safetensors`, {size:.1f} MB | "
                    f"{made(name)} | {held} | {base} | {verdict(name, r)} |")
    return "\n".join(rows)


def write(record: dict) -> None:
    text, block = DOC.read_text(), table(record)
    start, end = "<!-- bundled:start -->", "<!-- bundled:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{DOC} has no {start} ... {end} markers")
    DOC.write_text(text[:text.index(start) + len(start)] + "\n" + block + "\n" + text[text.index(end):])
    print(block)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED, help="the folder holding redkitchen and camvid")
    ap.add_argument("--render", action="store_true", help="measure nothing: the table from the results file")
    args = ap.parse_args()
    if args.render:
        record = json.loads(RESULTS.read_text())
    else:
        record = {"date": datetime.date.today().isoformat(), "results": measure(args.data)}
        RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    write(record)


if __name__ == "__main__":
    main()
