"""`make bench`: every benchmark at the sizes of this device, one results table.

Writes ``benchmarks/results/<device>.json`` (every benchmark's full JSON) and
the Markdown table between the ``bench`` markers of ``docs/performance.md``. On a CPU the whole run takes a few minutes; on a GPU it uses the
sizes the issues name (h16 bf16 extraction, h16 pretraining MFU, b16 + DPT at
512 px).

    python -m benchmarks.run_all            # all, on this machine's device
    python -m benchmarks.run_all --only extract,pretrain_compiled
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "docs" / "performance.md"  # the results tables live between its bench markers

CPU = {
    "startup": ["benchmarks.startup", "--repeat", "3"],
    "extract_e2e": ["benchmarks.extract_e2e", "--size", "b16", "--images", "96", "--repeat", "3"],
    "extract": ["benchmarks.extract", "--size", "b16", "--device", "cpu", "--batch", "16", "--images", "32",
                "--iters", "3"],
    "pretrain_compiled": ["benchmarks.pretrain", "--size", "t16", "--img-size", "128", "--batch", "32", "--device",
                          "cpu", "--decoder-depth", "3", "--decoder-dim", "192", "--decoder-heads", "6", "--mask-grid",
                          "2", "--iters", "10", "--warmup", "2", "--compile"],
    "depth": ["benchmarks.depth", "--size", "t16", "--side", "256", "--device", "cpu", "--batch", "4",
              "--features", "64", "--head-channels", "48,96,192,192", "--iters", "3"],
    "curate": ["benchmarks.curate", "--size", "t16", "--images", "64", "--device", "cpu"],
    "pointmap": ["benchmarks.pointmap", "--size", "h16", "--views", "2", "--side", "256", "--device", "cpu"],
    "pointmap_memory": ["benchmarks.pointmap_memory", "--views", "8,32,128", "--side", "128x96"],
    "recon3d": ["benchmarks.recon3d"],
    "growth": ["benchmarks.growth", "--frames", "25,50,100,250", "--images", "24,96,384"],
    "known_depth": ["benchmarks.known_depth", "--frames", "250"],
}
LONG = {  # run only when named in --only: an hour or more on 2 cores
    "long_video": ["benchmarks.long_video", "--strides", "4,2,1"],
}
GPU = {  # eager runs first, compiled ones last: a short lease keeps the most figures
    "extract": ["benchmarks.extract", "--size", "h16", "--device", "cuda", "--batch", "64", "--images", "256",
                "--iters", "3"],
    "pretrain": ["benchmarks.pretrain", "--size", "h16", "--batch", "64", "--device", "cuda", "--iters", "8",
                 "--peak-tflops", "989"],
    "depth": ["benchmarks.depth", "--size", "b16", "--side", "512", "--device", "cuda", "--batch", "16"],
    "curate": ["benchmarks.curate", "--size", "b16", "--img-size", "256", "--images", "512", "--batch", "64",
               "--device", "cuda"],
    "pointmap": ["benchmarks.pointmap", "--size", "h16", "--views", "64", "--side", "512", "--device", "cuda"],
    "startup": ["benchmarks.startup", "--repeat", "3"],
    "extract_compiled": ["benchmarks.extract", "--size", "h16", "--device", "cuda", "--batch", "64", "--images",
                         "256", "--iters", "3", "--compile"],
    "pretrain_compiled": ["benchmarks.pretrain", "--size", "h16", "--batch", "64", "--device", "cuda", "--iters",
                          "8", "--peak-tflops", "989", "--compile"],
}

WHAT = {
    "startup": "`pixio extract one.jpg` (and, where measured, `pixio depth one.jpg`), end to end, vs `import torch` alone",
    "extract_e2e": "`pixio extract` 96 photos b16 256 px end to end vs a plain transformers fp32 script",
    "extract": "`pixio extract`'s model path vs `transformers.PixioModel`",
    "extract_compiled": "the same, with `--compile`",
    "pretrain": "a pretraining step, eager (runs under 2000 steps, FSDP), vs transformers' ViTMAEForPreTraining of "
                "the same shape with torch's AdamW (where measured), and a plain MAE step (our model, official "
                "precision, for-loop AdamW)",
    "pretrain_compiled": "a pretraining step compiled (`pixio pretrain`'s default for runs of 2000 steps or more) vs "
                         "transformers' ViTMAEForPreTraining of the same shape with torch's AdamW (where measured), "
                         "and a plain MAE step (our model, official precision, for-loop AdamW)",
    "depth": "`pixio depth`'s model path vs transformers hidden states + the same DPT head",
    "curate": "`pixio curate`'s MAE-loss statistic vs the same statistic with transformers' ViTMAE of the same "
              "shape (where measured), and a plain loop over our MAE",
    "pointmap": "the point-map model (MapAnything-Pixio-H shape) at the default precision vs our same model in "
                "fp32 (MapAnything's precision; its own code is not run here): a precision ratio",
    "pointmap_memory": "peak memory of one point-map forward as the views grow",
    "recon3d": "`pixio recon3d` on 25 held-out 7-Scenes frames (bundled model) vs pycolmap's own SfM, end to end "
               "(geometry below)",
}


def run(module_args: list[str], timeout: float | None = None) -> dict:
    try:
        out = subprocess.run([sys.executable, "-m", *module_args], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout:.0f} s (--timeout)"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def int8_cells(r: dict) -> tuple[str, str]:
    """What a row adds to its ours and limit cells for ``--precision int8``: its time or rate and ratio, or
    that its check stopped it."""
    ours = limit = ""
    if "ratio_int8" in r:
        value = f"{r['ours_int8_s']} s" if "ours_int8_s" in r else f"{r['ours_int8_img_s']} img/s"
        ours = f"; `--precision int8` {value}, **{r['ratio_int8']}x**"
        limit = (f"; int8 cosine to fp32 {r['int8_min_cosine_to_fp32']}"
                 + (" (every image)" if "ours_int8_s" in r else ""))
    if "int8_refused" in r:
        ours += f"; {int8_refusal(r['int8_refused'])}"
    return ours, limit


def int8_refusal(message: str) -> str:
    """A refused ``--precision int8`` check in a few words (the command's message names temporary folders)."""
    m = re.search(r"cosine ([0-9.]+) of fp32, below the ([0-9.]+)", message)
    return f"int8 refused: cosine {m.group(1)} < {m.group(2)}" if m else "int8 refused by its check"


PRECISION = {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16"}


def _precisions(name: str, r: dict) -> tuple[str, str]:
    """(ours, the reference's) precision of a row, in one spelling: extract's model path compares at the
    same precision, extract_e2e against a plain fp32 script."""
    ours = str(r.get("precision", r.get("dtype", "")))
    default = "fp32" if name == "extract_e2e" else ours if name.startswith("extract") or not ours else ""
    ref = str(r.get("reference_precision", default))
    return PRECISION.get(ours, ours), PRECISION.get(ref, ref)


def ratio_cell(name: str, r: dict, table: dict) -> str:
    """The ratio cell: bold only for ours against the reference at the same precision, in the reference's
    best mode; a ratio that includes a precision gain, or is one, is said so and not bold."""
    ours_p, ref_p = _precisions(name, r)
    if name == "extract_compiled" and "extract" in table and "reference_img_s" in table["extract"]:
        best = max(r["reference_img_s"], table["extract"]["reference_img_s"])  # transformers eager or compiled
        return (f"**{r['ours_img_s'] / best:.3f}x** against transformers' best mode ({best} img/s); "
                f"{r['ratio']}x against it compiled")
    plain_name = "loop" if name == "curate" else "MAE step"  # pretrain's and curate's own plain reference
    if "ratio_transformers" in r:  # pretraining: transformers' ViTMAE is the outside reference
        t_p = PRECISION.get(r["transformers_precision"], r["transformers_precision"])
        plain = (f"; {r['ratio_same_precision']}x against the plain {plain_name} at {ref_p}"
                 if ours_p != ref_p and "ratio_same_precision" in r else f"; {r['ratio']}x against the plain {plain_name}")
        if t_p == ours_p:
            return f"**{r['ratio_transformers']}x** against transformers' ViTMAE{plain}"
        same = r.get("ratio_transformers_same_precision")
        gain = f"{r['ratio_transformers']}x with the precision gain ({ours_p} against {t_p})"
        return (f"**{same}x** against transformers' ViTMAE at {t_p}; {gain}" if same is not None
                else f"not measured at {t_p}; {gain}") + plain
    if name in ("pretrain", "pretrain_compiled", "curate"):  # measured before transformers ran beside: not bold
        same = r.get("ratio_same_precision") if ours_p != ref_p else r["ratio"]
        at = f"{same}x at {ref_p}" if same is not None else f"{r['ratio']}x with the precision gain ({ours_p} against {ref_p})"
        return f"{at} against our own plain {plain_name} (no outside reference in this run)"
    if name == "recon3d":  # pixio makes a dense cloud as well: like for like is the cameras alone
        k = r.get("kitchen", {})
        c, sfm = k.get("colmap_our_settings"), k.get("ours", {}).get("stages", {}).get("sfm_stages")
        cells = [f"sparse + dense vs COLMAP sparse: {r['ratio']}x at its defaults"]
        if c:
            cells[0] += f", {c['seconds'] / r['ours_s']:.3f}x at pixio's settings"
        if c and sfm:  # the SfM thread's stages (decoding the frames for it included) against COLMAP's
            cells.insert(0, f"cameras alone vs COLMAP at pixio's settings: **{sum(c['stages'].values()) / sum(sfm.values()):.3f}x**")
        return "; ".join(cells)
    if name == "pointmap":  # MapAnything's own code is not run here: our model against itself
        return (f"{r['ratio']}x (a precision ratio: {ours_p} against our own {ref_p})" if ours_p != ref_p else
                f"{r['ratio']}x (our model against itself, both {ref_p}: no outside reference)")
    if not ours_p or not ref_p or ours_p == ref_p:
        return f"**{r['ratio']}x**"
    same = r.get("ratio_fp32") if ref_p == "fp32" else None
    same = same if same is not None else r.get("ratio_same_precision")
    gain = f"{r['ratio']}x with the precision gain ({ours_p} against {ref_p})"
    return f"**{same}x** at {ref_p}; {gain}" if same is not None else f"not measured at {ref_p}; {gain}"


def _startup_cells(r: dict) -> tuple[str, str, str, str]:
    """The startup row's ours, reference, note and limit."""
    ours, ref = f"{r['extract_one_s']} s", f"{r['import_torch_s']} s"
    more = f"help {r['help_s']} s, usage error {r['usage_error_s']} s"
    if "ratio_depth" not in r:  # tables measured before pixio dropped timm
        return ours, ref, more, f"timm -> torchvision import {r['timm_torchvision_s']} s"
    ours += f"; `pixio depth one.jpg` {r['depth_one_s']} s, **{r['ratio_depth']}x**"
    if "ratio_fp32" in r:
        more += (f"; `--precision fp32`: extract {r['extract_one_fp32_s']} s, {r['ratio_fp32']}x, depth "
                 f"{r['depth_one_fp32_s']} s, {r['ratio_depth_fp32']}x")
    return ours, ref, more, f"imports beyond torch {r['imports_beyond_torch_s']} s"


def row(name: str, r: dict, table: dict | None = None) -> tuple[str, str]:
    """One benchmark's line of the table (short cells: ours, the reference, the ratio) and its note (what it
    compares, the hardware limit and the rest), which goes below the table."""
    if "error" in r:
        return f"| {name} | failed | | |", f"**{name}**: {WHAT.get(name, '')}. Failed: {r['error'][:120]}"
    more = ""  # what the ours and reference cells would say beyond their figures: the note's
    if name == "startup":
        ours, ref, more, limit = _startup_cells(r)
    elif name == "curate" and "ratio_same_precision" in r:
        ours = f"{r['ours_img_s']} img/s {r['precision']}"
        more = f"ours at {r['reference_precision']}: {r['ours_same_precision_img_s']} img/s"
        ref = f"{r['reference_img_s']} img/s {r['reference_precision']}"
        if "ratio_transformers" in r:
            ref = (f"transformers' ViTMAE {r['transformers_img_s']} img/s {r['transformers_precision']}; plain loop "
                   + ref)
        limit = (f"same precision {r['ratio_same_precision']}x; matmul peak {r['matmul_peak_tflop_s']} TFLOP/s")
    elif name == "extract_e2e":
        ours = f"{r['ours_s']} s {r['precision']}"
        more = f"ours at fp32: {r['ours_fp32_s']} s, {r['ratio_fp32']}x"
        ref = f"{r['reference_s']} s"
        limit = (f"{r['achieved_tflop_s']} of {r['matmul_peak_tflop_s']} TFLOP/s {r['precision']} matmul peak "
                 f"(fp32 peak {r['matmul_peak_fp32_tflop_s']}); cosine to fp32 {r['min_cosine_to_fp32']}")
        more_ours, more_limit = int8_cells(r)
        ours, limit = ours + more_ours, limit + more_limit
    elif name == "recon3d":
        k = r["kitchen"]
        ours = f"{r['ours_s']} s; ATE {r['ate_cm']} cm, {k['ours']['registered_by_sfm']}/{k['frames']} registered"
        ref = (f"COLMAP's defaults {r['reference_s']} s; ATE {r['colmap_ate_cm']} cm, "
               f"{k['colmap']['registered']}/{k['frames']} registered")
        more = (f"ours: scale {k['ours']['scale']:.3f}, rot {k['ours']['rotation_error_deg']:.2f} deg; COLMAP at its "
                f"defaults: rot {k['colmap']['rotation_error_deg']:.2f} deg, stages "
                + ", ".join(f"{a} {b:.1f} s" for a, b in k["colmap"].get("stages", {}).items()))
        if "colmap_our_settings" in k:
            c = k["colmap_our_settings"]
            ref += f"; at pixio's settings {c['seconds']} s"
            more += (f"; COLMAP at pixio's settings (SIFT on the images as they are, 20 initial-pair trials at 8 deg, "
                     f"one thread): ATE {100 * c.get('ate_mean', float('nan')):.2f} cm, "
                     f"{c['registered']}/{k['frames']} registered; stages "
                     + ", ".join(f"{a.split(' of ')[0]} {b:.1f} s" for a, b in c["stages"].items()))
        limit = (f"baselines: cameras at the origin {100 * k['origin']['ate_mean']:.1f} cm, constant velocity "
                 f"{100 * k['constant_velocity']['ate_mean']:.1f} cm, --no-sfm {100 * k['ours_no_sfm']['ate_mean']:.1f} cm; "
                 f"peak memory {k['ours']['peak_memory_gib']} GiB vs {k['colmap']['peak_memory_gib']} GiB")
        if "ours_stacked" in k:
            st = k["ours"]["stages"]
            limit += (f"; ours with `--mesh --cameras colmap`: fusion {st.get('fusion')} s, mesh {st.get('mesh')} s; "
                      f"`--no-fusion` {k['ours_stacked']['seconds']} s")
    elif name == "pointmap":
        ours = f"{r['ours_views_s']} views/s {r['precision']}"
        ref = f"{r['reference_views_s']} views/s fp32"
        limit = (f"matmul peak {r['matmul_peak_tflop_s']} TFLOP/s; points within {r['max_rel_diff_pts3d']:.1%} of "
                 f"fp32; {r['views']} views of {r['side']} px" +
                 (f"; peak memory {r['peak_memory_gib']} GiB" if "peak_memory_gib" in r else ""))
    else:
        unit = "img/s"
        prec = r.get("precision", r.get("dtype", ""))
        ours = f"{r.get('ours_img_s')} {unit} {prec}"
        ref = f"{r.get('reference_img_s', r.get('transformers_img_s'))} {unit} {r.get('reference_precision', prec)}"
        if "ratio_transformers" in r:
            ref = (f"transformers' ViTMAE {r['transformers_img_s']} {unit} {r['transformers_precision']}; plain MAE "
                   f"step {r['reference_img_s']} {unit} {r['reference_precision']}")
        limit = f"matmul peak {r.get('matmul_peak_tflop_s', '?')} TFLOP/s"
        more_ours, more_limit = int8_cells(r)
        ours, limit = ours + more_ours, limit + more_limit
        if "mfu_of_measured_peak" in r:
            limit += f"; MFU {r['mfu_of_measured_peak']:.0%} of it"
        if "mfu_of_datasheet_peak" in r:
            limit += f" ({r['mfu_of_datasheet_peak']:.0%} of the data sheet)"
        if "max_loss_rel_diff" in r:
            limit += f"; losses within {r['max_loss_rel_diff']:.2%}"
        if "ratio_eager" in r:
            limit += f"; eager {r['ratio_eager']}x in the same run"
        if "ratio_same_precision" in r:
            limit += f"; at the reference's precision {r['ratio_same_precision']}x"
    note = f"**{name}**: {WHAT.get(name, '')}." + "".join(f" {x[0].upper()}{x[1:]}." for x in (more, limit) if x)
    return f"| {name} | {ours} | {ref} | {ratio_cell(name, r, table or {})} |", note


def growth_table(r: dict) -> list[str]:
    """How time and memory grow with the work (the growth benchmark), when it ran: pixio beside COLMAP, each
    size's two runs from one invocation, so the speed-up is a ratio of one run's figures."""
    if not r or "recon3d" not in r:
        return []
    out = ["", "How cost grows with the work (`benchmarks/growth.py`): `pixio recon3d` on the first N of the 250 "
           "recorded 7-Scenes frames (every 4th frame of the walk) against pycolmap's SfM at its defaults "
           "(exhaustive matching up to 50 frames, sequential beyond), both in one invocation; the speed-up is "
           "COLMAP's time over pixio's (pixio also makes the dense cloud). Longer videos: the long-video table. "
           "Then `pixio extract` (t16) against the plain transformers script.", "",
           "| frames | pixio recon3d | COLMAP | pixio's speed-up | peak memory (pixio, COLMAP) | ATE (pixio, COLMAP) "
           "| registered |", "|---|---|---|---|---|---|---|"]
    for row in r["recon3d"]:
        o, c = row["ours"], row["colmap"]
        ate = lambda x: f"{100 * x['ate_mean']:.1f} cm" if "ate_mean" in x else "n/a"  # noqa: E731
        if row.get("distinct_frames", row["frames"]) < row["frames"]:
            continue  # the walk there and back (older runs): frames repeated, not a video; see the long-video table
        out.append(f"| {row['frames']} | {o['seconds']} s | {c['seconds']} s ({c['matching']}) | "
                   f"{c['seconds'] / o['seconds']:.2f}x | {o['peak_memory_gib']}, {c['peak_memory_gib']} GiB | "
                   f"{ate(o)}, {ate(c)} | {o['registered']}, {c['registered']} |")
    out += ["", "| images | pixio extract | plain script | ratio |", "|---|---|---|---|"]
    out += [f"| {e['images']} | {e['ours_s']} s | {e['reference_s']} s | {e['ratio']}x |" for e in r["extract"]]
    return out


def loop_closure_table(r: dict) -> list[str]:
    """Drift where the camera returns, with and without --loop-closure (benchmarks/loop_closure.py), when it ran
    (not part of make bench)."""
    if not r or "ours" not in r:
        return []
    mapper = r.get("colmap", {}).get("mapper", "incremental")
    names = {"ours": "`pixio recon3d` (default)", "ours_loop_closure": "`pixio recon3d --loop-closure`",
             "colmap": f"COLMAP (sequential matching, {mapper} mapper, its defaults)",
             "trivial_origin": "baseline: every camera at one place"}
    cm = lambda x: "n/a" if x is None else f"{100 * x:.1f} cm"  # noqa: E731
    pairs = r["ours"].get("loop_pairs", "?")
    out = ["", f"Drift where the camera returns (`python -m benchmarks.loop_closure --frames {r['frames']}`): the "
           f"7-Scenes walk, {r['frames']} frames, which comes back to where it was. The loop gap is the mean error "
           f"of the offset between the cameras of {pairs} pairs of frames at least 40 frames apart that stand "
           "within 15 cm and 20 degrees of each other, after aligning all cameras to the recorded poses.", "",
           "| run | time | peak memory | loop gap | ATE | registered |", "|---|---|---|---|---|---|"]
    for key, name in names.items():
        if key in r:
            x = r[key]
            time_ = f"{x['seconds']} s" if "seconds" in x else ""
            memory = f"{x['peak_memory_gib']} GiB" if "peak_memory_gib" in x else ""
            out.append(f"| {name} | {time_} | {memory} | {cm(x['loop_gap_m'])} | {cm(x.get('ate_mean'))} | "
                       f"{x['registered']} |")
    return out


LONG_VIDEO_RUNS = {  # key in a row: what ran
    "pixio": "`pixio recon3d` (default: keyframes above 250 frames)",
    "pixio_global": "`pixio recon3d --mapper global`",
    "pixio_incremental": "`pixio recon3d --mapper incremental`",
    "colmap_global": "COLMAP, global mapper",
    "colmap_incremental": "COLMAP, incremental mapper",
    "trivial_origin": "baseline: every camera at one place",
}


def long_video_table(r: dict) -> list[str]:
    """Cameras on the real long video (benchmarks/long_video.py) at each stride, pixio beside COLMAP from the
    same run: a time ratio only between two runs of one invocation."""
    if not r or "rows" not in r:
        return []
    cm = lambda x: "n/a" if x is None else f"{100 * x:.1f} cm"  # noqa: E731
    out = ["", f"Cameras on a real long video (`python -m benchmarks.long_video`, not part of `make bench`): the "
           f"{max(row['frames'] for row in r['rows'])} frames of a 7-Scenes kitchen video ({r['video']}) as they are "
           "and every 2nd and 4th frame, never a frame twice. Each run is a fresh process at default options; "
           "COLMAP (pycolmap at its defaults, sequential matching) ran in the same invocation, alternating with "
           "pixio. ATE: camera centres after a similarity; RPE: the motion over 100 video frames (drift). "
           "Speed-up: the run's time over pixio's default, both from this run.", "",
           "| frames | run | time | pixio's speed-up | peak memory | registered | ATE | RPE (100 frames) |",
           "|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        ours = row.get("pixio", {})
        for key, name in LONG_VIDEO_RUNS.items():
            x = row.get(key)
            if x is None:
                continue
            if "stopped" in x:
                out.append(f"| {row['frames']} | {name} | {x['stopped']} | | | | | |")
                continue
            time_ = f"{x['seconds']} s" if "seconds" in x else ""
            ratio = (f"{x['seconds'] / ours['seconds']:.2f}x" if key != "pixio" and "seconds" in x
                     and "seconds" in ours else "")
            memory = f"{x['peak_memory_gib']} GiB" if "peak_memory_gib" in x else ""
            rpe = f"{cm(x['rpe_m'])}, {x['rpe_deg']:.1f} deg" if x.get("rpe_m") is not None else ""
            out.append(f"| {row['frames']} | {name} | {time_} | {ratio} | {memory} | {x['registered']} | "
                       f"{cm(x.get('ate_mean'))} | {rpe} |")
    return out


def pointmap_memory_table(r: dict) -> list[str]:
    """Peak memory of one point-map forward as the views grow, with the dense head split three ways."""
    if not r or "rows" not in r:
        return []
    dense = next((x["dense_views"] for x in r["rows"] if x["mode"] == "default"), "?")
    names = {"default": f"pixio's default ({dense} views at a time through the dense head)",
             "all_at_once": "every view at once through the dense head",
             "one_at_a_time": "one view at a time (MapAnything's memory-efficient inference on a CPU)"}
    counts = sorted({x["views"] for x in r["rows"]})
    out = ["", f"Memory of many views (`benchmarks/pointmap_memory.py`): peak memory of one forward of the bundled "
           f"point-map model above the loaded model, fp32, {r['rows'][0]['side']} px, a fresh process each, "
           "and the forward's time:", "",
           "| dense head | " + " | ".join(f"{v} views" for v in counts) + " |", "|---" * (len(counts) + 1) + "|"]
    for mode, name in names.items():
        cell = {x["views"]: f"{x['peak_above_model_mib']:.0f} MiB, {x['forward_s']} s"
                for x in r["rows"] if x["mode"] == mode}
        out.append(f"| {name} | " + " | ".join(cell.get(v, "") for v in counts) + " |")
    return out


def known_depth_table(r: dict) -> list[str]:
    """The known-depth benchmark: the RGB-D folder as it is, with and without moving the cameras on the depth,
    and without the depth, scored against the recorded depth."""
    if not r or "runs" not in r:
        return []
    names = {"default": "`pixio recon3d FOLDER` (depth in, cameras moved on it)",
             "no_depth_cameras": "`--no-depth-cameras` (the matched cameras as they are)",
             "no_depth_input": "`--no-depth-input` (the network's depth alone)"}
    out = ["", f"Known depth (`benchmarks/known_depth.py`): the 7-Scenes folder as it is, {r['frames']} frames, its "
           "recorded depth as input, scored against that depth on the recorded poses (`pixio evaluate recon3d "
           "--no-sensor-offset`), aligned by a similarity of the camera paths or rigidly (`--no-scale`: metres "
           "judged); the ceiling is the recorded depth on the run's cameras, the baseline one constant depth on "
           "them:", "",
           "| run | time | peak memory | ATE (similarity, rigid) | **F@5cm** (similarity) | F@5cm (rigid) | "
           "accuracy, completeness (rigid) | ceiling F@5cm (rigid) | baseline F@5cm (rigid) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for name, x in r["runs"].items():
        sim, rigid = x["similarity"], x["rigid"]
        scene = rigid["rows"]["scene"]
        out.append(f"| {names.get(name, name)} | {x['seconds']} s | {x['peak_memory_gib']} GiB | "
                   f"{100 * sim['ate']:.2f} cm, {100 * rigid['ate']:.2f} cm | "
                   f"**{sim['rows']['scene']['f@0.05']:.3f}** | {scene['f@0.05']:.3f} | "
                   f"{100 * scene['accuracy']:.1f} cm, {100 * scene['completeness']:.1f} cm | "
                   f"{rigid['rows']['recorded_depth_on_cameras']['f@0.05']:.3f} | "
                   f"{rigid['rows']['constant_depth_on_cameras']['f@0.05']:.3f} |")
    return out


GEOMETRY_ROWS = (  # run, cloud, what it is
    ("ours", "scene", "`pixio recon3d` (default)"),
    ("ours", "mesh", "its `--mesh` (points spread on it)"),
    ("ours_flat", "scene", "`--depth-prior flat` (the network's depth replaced by a plane: the images alone)"),
    ("ours_known", "scene", "`--known-cameras` (the recorded cameras), scale fitted"),
    ("ours_stacked", "scene", "`--no-fusion` (the network's depth on the cameras, every view as placed)"),
    ("colmap", "colmap_points", "COLMAP alone, its sparse points"),
    ("ours", "colmap_points", "the sparse points of our SfM"),
    ("ours", "recorded_depth_on_cameras", "ceiling: the recorded depth on our cameras"),
    ("ours", "constant_depth_on_cameras", "baseline: one constant depth on our cameras"),
)


def geometry_table(r: dict) -> list[str]:
    """The recon3d benchmark's geometry against the recorded depth, one table per scene (the kitchen, and the
    rendered scenes no network saw), one row per cloud, as Markdown."""
    sets = [("kitchen", r.get("kitchen", {}), "the same 25 held-out 7-Scenes frames (the bundled model was "
                                             "trained on other frames of this kitchen)")]
    sets += [(kind, s, f"a rendered {kind} scene no network saw ({s.get('frames')} frames, "
                       "`benchmarks/synthetic_scenes.py`, exact depth and cameras)")
             for kind, s in (r.get("unseen") or {}).items()]
    out = []
    for _, data, what in sets:
        g = data.get("geometry")
        if not g or "ours" not in g:
            continue
        out += ["", f"`recon3d`'s geometry on {what}, against the recorded depth (`pixio evaluate recon3d`: aligned "
                f"by the camera path, ATE {100 * g['ours']['ate']:.2f} cm; accuracy and completeness are median "
                "distances; precision, recall and F-score within 2 and 5 cm; time and peak memory of the whole "
                "run):", "",
                "| cloud | 1 cm voxels | accuracy | completeness | **F@2cm** | P@5cm | R@5cm | **F@5cm** | time | "
                "peak memory |", "|---|---|---|---|---|---|---|---|---|---|"]
        for run, cloud, name in GEOMETRY_ROWS:
            x = g.get(run, {}).get("rows", {}).get(cloud)
            if not x:
                continue
            timed = data.get(run, {}) if cloud == "scene" or run == "colmap" else {}  # what that run cost
            cost = f"{timed['seconds']} s | {timed['peak_memory_gib']} GiB" if "seconds" in timed else " | "
            out.append(cloud_row(name, x, cost))
        rigid = data.get("geometry_rigid", {}).get("ours_known")
        if rigid:
            out.append(cloud_row("`--known-cameras`, scored in its own metres (scale judged, not fitted; the path's "
                                 f"fit would be {g['ours_known']['scale']:.3f})", rigid["rows"]["scene"]))
        out += refined_rows(data.get("geometry_refined") or {})
        out += range_table((data.get("geometry_refined") or {}).get("ours"))
    return out


RANGE_ROWS = (("scene", "`pixio recon3d` (default)"), ("colmap_points", "the sparse points of our SfM"))


def range_table(refined: dict | None) -> list[str]:
    """The default run's refined rows per band of distance to the nearest recorded camera (``by_range`` of
    ``pixio evaluate recon3d --by-range``): where the geometry holds, beside the SfM's triangulated points."""
    rows = (refined or {}).get("rows", {})
    bands = (rows.get("scene") or {}).get("by_range")
    if not bands:
        return []
    span = lambda b: f"{b['from']:g}-{b['to']:g} m" if b["to"] is not None and b["to"] != float("inf") \
        else f"over {b['from']:g} m"  # noqa: E731
    figure = lambda v: f"{v:.3f}" if v is not None else "-"  # noqa: E731
    out = ["", "Where that geometry holds: the default run after the same refinement, per band of distance to the "
           "nearest recorded camera (`--by-range`), P@5cm / R@5cm; each band's share of the truth in the heading "
           "(its points are judged against the whole truth):", "",
           "| cloud | " + " | ".join(f"{span(b)} ({b['truth']:.0%} of the truth)" for b in bands) + " |",
           "|---|" + "---|" * len(bands)]
    for cloud, name in RANGE_ROWS:
        x = (rows.get(cloud) or {}).get("by_range")
        if x:
            out.append(f"| {name} | " + " | ".join(f"{figure(b['precision@0.05'])} / {figure(b['recall@0.05'])}"
                                                   for b in x) + " |")
    return out


def cloud_row(name: str, x: dict, cost: str = " | ") -> str:
    """One cloud's line of a geometry table: its scores ``x`` (a row of ``pixio evaluate recon3d``) and cost."""
    return (f"| {name} | {x['points']} | {100 * x['accuracy']:.1f} cm | {100 * x['completeness']:.1f} cm | "
            f"**{x.get('f@0.02', float('nan')):.3f}** | {x['precision@0.05']:.3f} | "
            f"{x['recall@0.05']:.3f} | **{x['f@0.05']:.3f}** | {cost} |")


REFINED_ROWS = (  # run, cloud, what it is: scored after Tanks and Temples' refinement on the run's own cloud
    ("ours", "scene", "`pixio recon3d` (default), refined on its own cloud"),
    ("ours", "colmap_points", "the sparse points of our SfM, after the default's refinement (not fitted to them)"),
    ("ours", "recorded_depth_on_cameras", "ceiling: the recorded depth on our cameras, after the default's refinement"),
    ("ours_known", "scene", "`--known-cameras`, refined on its own cloud"),
    ("colmap", "colmap_points", "COLMAP alone, refined on its sparse points (few, on edges: ICP holds them loosely)"),
)


def refined_rows(refined: dict) -> list[str]:
    """Rows after the alignment is refined on each run's own geometry (``pixio evaluate recon3d --refine``:
    ICP with scale, as Tanks and Temples score), with how far the refinement moved it."""
    out = []
    for run, cloud, name in REFINED_ROWS:
        g = refined.get(run)
        x = (g or {}).get("rows", {}).get(cloud)
        if not x:
            continue
        r = g["refined"]
        out.append(cloud_row(f"{name} (x{r['scale']:.3f}, {r['degrees']:.2f} deg, points moved "
                             f"{100 * r['shift']:.1f} cm)", x))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="comma-separated benchmark names")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds each benchmark may run; one that runs over is recorded as failed (a short lease)")
    ap.add_argument("--render", action="store_true",
                    help="run nothing: write every machine's table again from benchmarks/results/*.json")
    args = ap.parse_args()
    if args.render:
        for path in machine_results():
            write_table(json.loads(path.read_text()), path.stem, args.no_readme)
        return
    import torch

    cuda = torch.cuda.is_available()
    plan = GPU if cuda else CPU
    if args.only:
        plan = {k: v for k, v in {**plan, **({} if cuda else LONG)}.items() if k in args.only.split(",")}
    results = {}
    for name, module_args in plan.items():
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = run(module_args, args.timeout)
        print(json.dumps(results[name]), file=sys.stderr, flush=True)
        save(results, cuda, bool(args.only))  # a run cut short keeps what it measured
    record, kind = save(results, cuda, bool(args.only))
    write_table(record, kind, args.no_readme)


def machine_results() -> list[Path]:
    """The results files of one machine each (not scripts/model_card.py's or scripts/official_parity.py's)."""
    return [p for p in sorted(RESULTS.glob("*.json")) if p.stem not in ("bundled-models", "official-parity")]


def write_table(record: dict, kind: str, no_readme: bool = False) -> None:
    """Print one machine's table and put it between its markers in docs/performance.md."""
    table = [f"Measured {record['date']} on {record['device']} ({record['cpus']} CPUs visible), torch "
             f"{record['torch']}; `python -m benchmarks.run_all` wrote it, with every figure in "
             f"`benchmarks/results/{kind}.json`." + _row_dates(record) + _staleness(record)]
    rows = [row(name, r, record["results"]) for name, r in record["results"].items()
            if name not in ("growth", "known_depth", "pointmap_memory", "loop_closure", "long_video")]
    if rows:
        table += ["", "| benchmark | ours | reference (same run) | ratio (bold: like for like) |", "|---|---|---|---|"]
        table += [line for line, _ in rows] + ["", "What each row compares, the hardware limit and the rest:", ""]
        table += [f"- {note}" for _, note in rows]
    table += geometry_table(record["results"].get("recon3d", {}))
    table += growth_table(record["results"].get("growth", {}))
    table += loop_closure_table(record["results"].get("loop_closure", {}))
    table += long_video_table(record["results"].get("long_video", {}))
    table += known_depth_table(record["results"].get("known_depth", {}))
    table += pointmap_memory_table(record["results"].get("pointmap_memory", {}))
    print("\n".join(table))
    if not no_readme and README.exists():
        text = README.read_text()
        start, end = f"<!-- bench:{kind}:start -->", f"<!-- bench:{kind}:end -->"
        block = start + "\n" + "\n".join(table) + "\n" + end
        if start in text and end in text:
            text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
        else:
            text = text.replace("<!-- bench:tables -->", f"<!-- bench:tables -->\n\n{block}")
        README.write_text(text)


def _staleness(record: dict) -> str:
    """What the heading says of a table measured on older code or another torch than the install's."""
    notes = []
    pinned = re.search(r"torch==([0-9.]+)", (ROOT / "scripts" / "install.sh").read_text())
    if pinned and not str(record["torch"]).startswith(pinned.group(1) + "+") and str(record["torch"]) != pinned.group(1):
        notes.append(f"the install now pins torch {pinned.group(1)}")
    code = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%cs", "--", "pixio_cli", "heads", "pretrain"],
                          capture_output=True, text=True).stdout.strip()
    if code and str(record["date"]).split(" to ")[-1] < code:
        notes.append(f"older than the code it measures (last changed {code}): its figures may have moved since")
    return (" **Stale**: " + "; ".join(notes) + ".") if notes else ""


def _row_dates(record: dict) -> str:
    """Which rows were measured when, for a table that --only runs updated on later days."""
    first = str(record["date"]).split(" to ")[0]
    days: dict[str, list[str]] = {}
    for name, r in record["results"].items():
        days.setdefault(r.get("date", first), []).append(name)
    if len(days) < 2:
        return ""
    return " Rows by day: " + "; ".join(f"{day}: {', '.join(names)}" for day, names in sorted(days.items())) + "."


def save(results: dict, cuda: bool, partial: bool) -> tuple[dict, str]:
    """Write ``benchmarks/results/<device>.json``; a partial run (--only) updates the benchmarks it ran."""
    first = next((r for r in results.values() if "device_name" in r), {})
    if cuda:
        kind = "cuda-" + re.sub(r"[^a-z0-9]+", "-", first.get("device_name", "gpu").lower()).strip("-")
    else:  # CPUs with and without native bf16, and without AVX-512, run different kernels: tables kept apart
        from pixio_cli import cpu
        from pixio_cli.engine import cpu_has_native_bf16

        kind = "cpu" if cpu_has_native_bf16() else "cpu-no-bf16" if "avx512f" in (cpu.flags() or ()) else "cpu-avx2"
    today = datetime.date.today().isoformat()
    results = {name: {"date": today, **r} for name, r in results.items()}  # rows of one table may differ in date
    record = {"date": today, "device": first.get("device_name"),
              "cpus": first.get("cpus"), "torch": first.get("torch"), "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{kind}.json"
    if path.exists() and partial and json.loads(path.read_text()).get("device") not in (None, record["device"]):
        # one table, one machine: another machine of the same kind gets a table of its own, named for it
        kind += "-" + re.sub(r"[^a-z0-9]+", "-", str(record["device"]).lower()).strip("-")
        path = RESULTS / f"{kind}.json"
    if path.exists() and partial:
        old = json.loads(path.read_text())
        first_day = str(old.get("date", record["date"])).split(" to ")[0]  # saved after each benchmark
        record = {**record, "date": f"{first_day} to {record['date']}" if first_day != record["date"]
                  else record["date"], "results": {**old.get("results", {}), **results}}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record, kind

if __name__ == "__main__":
    main()
