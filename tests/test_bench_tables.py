"""The benchmark tables say what a ratio is: bold only for ours against a reference at the same precision,
in the reference's best mode."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.run_all import ratio_cell


def test_a_ratio_across_precisions_is_not_bold_and_says_so():
    r = {"precision": "bfloat16", "reference_precision": "float32", "ratio": 1.69}
    cell = ratio_cell("depth", r, {})
    assert "**" not in cell and "not measured at fp32" in cell and "precision gain (bf16 against fp32)" in cell
    same = ratio_cell("extract_e2e", {"precision": "bf16", "ratio": 1.83, "ratio_fp32": 1.11}, {})
    assert same.startswith("**1.11x** at fp32")
    assert ratio_cell("depth", {"precision": "float32", "reference_precision": "float32", "ratio": 1.09}, {}) == "**1.09x**"


def test_our_model_against_itself_in_fp32_is_labelled_a_precision_ratio():
    cell = ratio_cell("pointmap", {"precision": "bfloat16", "reference_precision": "float32", "ratio": 9.2}, {})
    assert "**" not in cell and "precision ratio" in cell
    cell = ratio_cell("pointmap", {"precision": "float32", "reference_precision": "float32", "ratio": 0.9}, {})
    assert "**" not in cell and "no outside reference" in cell  # same precision, still not a reference


def test_a_compiled_run_is_measured_against_the_references_best_mode():
    table = {"extract": {"reference_img_s": 1158.63}}
    r = {"precision": "bfloat16", "ours_img_s": 1365.11, "reference_img_s": 768.07, "ratio": 1.777}
    cell = ratio_cell("extract_compiled", r, table)
    assert cell.startswith("**1.178x** against transformers' best mode (1158.63 img/s)")


def test_the_growth_table_shows_each_size_beside_colmap_with_a_ratio_from_the_same_run():
    from benchmarks.run_all import growth_table

    r = {"recon3d": [{"frames": 25, "ours": {"seconds": 24.0, "peak_memory_gib": 1.7, "registered": 25,
                                             "ate_mean": 0.0178},
                      "colmap": {"seconds": 19.0, "peak_memory_gib": 0.3, "matching": "exhaustive", "registered": 0}}],
         "extract": [{"images": 24, "ours_s": 6.6, "reference_s": 8.1, "ratio": 1.23}]}
    lines = growth_table(r)
    assert "| 25 | 24.0 s | 19.0 s (exhaustive) | 0.79x | 1.7, 0.3 GiB | 1.8 cm, n/a | 25, 0 |" in lines, lines
    assert "| 24 | 6.6 s | 8.1 s | 1.23x |" in lines and growth_table({}) == []


def test_the_known_depth_table_shows_each_run_under_both_alignments_beside_its_ceiling_and_baseline():
    from benchmarks.run_all import known_depth_table

    def scored(f: float, ate: float) -> dict:
        rows = {"scene": {"f@0.05": f, "accuracy": 0.006, "completeness": 0.015},
                "recorded_depth_on_cameras": {"f@0.05": 0.93}, "constant_depth_on_cameras": {"f@0.05": 0.23}}
        return {"ate": ate, "ate_origin": 0.6, "scale": 1.0, "rows": rows}

    r = {"frames": 250, "runs": {"default": {"seconds": 250.0, "peak_memory_gib": 3.3,
                                             "similarity": scored(0.904, 0.0723), "rigid": scored(0.891, 0.0734)}}}
    lines = known_depth_table(r)
    assert ("| `pixio recon3d FOLDER` (depth in, cameras moved on it) | 250.0 s | 3.3 GiB | 7.23 cm, 7.34 cm | "
            "**0.904** | 0.891 | 0.6 cm, 1.5 cm | 0.930 | 0.230 |") in lines, lines
    assert "250 frames" in lines[1] and known_depth_table({}) == []


def test_pretraining_is_bold_against_transformers_vitmae_at_the_same_precision():
    r = {"precision": "bfloat16", "reference_precision": "float32", "ratio": 2.15, "transformers_precision": "float32",
         "ratio_transformers": 0.69, "ratio_transformers_same_precision": 1.13, "ratio_same_precision": 1.1}
    cell = ratio_cell("pretrain_compiled", r, {})
    assert cell.startswith("**1.13x** against transformers' ViTMAE at fp32") and "0.69x with the precision gain" in cell
    assert "1.1x against the plain MAE step at fp32" in cell and "2.15" not in cell  # no precision gain unlabelled
    r.update(precision="float32", ratio_transformers=1.1, ratio=0.74)
    assert ratio_cell("pretrain", r, {}).startswith("**1.1x** against transformers' ViTMAE;")
    assert "0.74x against the plain MAE step" in ratio_cell("pretrain", r, {})


def test_a_row_measured_only_against_our_own_plain_loop_is_not_bold():
    r = {"precision": "bfloat16", "reference_precision": "bfloat16", "ratio": 1.41}
    cell = ratio_cell("pretrain", r, {})
    assert "**" not in cell and cell.startswith("1.41x at bf16 against our own plain MAE step")
    assert "**" not in ratio_cell("curate", {"precision": "float32", "reference_precision": "fp32", "ratio": 1.04}, {})


def test_the_tables_in_the_docs_are_what_the_results_files_render(tmp_path, monkeypatch):
    """Every figure in the generated tables comes from a results file: rendering them again from
    benchmarks/results changes nothing in docs/performance.md or docs/models.md (a hand edit, or a results
    file changed without rendering, fails here)."""
    import importlib.util
    import shutil

    from benchmarks import run_all

    root = Path(__file__).resolve().parents[1]
    for page in ("performance.md", "models.md"):
        shutil.copy(root / "docs" / page, tmp_path / page)
    monkeypatch.setattr(run_all, "README", tmp_path / "performance.md")
    for path in run_all.machine_results():
        run_all.write_table(json.loads(path.read_text()), path.stem)
    spec = importlib.util.spec_from_file_location("model_card", root / "scripts" / "model_card.py")
    card = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(card)
    monkeypatch.setattr(card, "DOC", tmp_path / "models.md")
    card.write(json.loads(card.RESULTS.read_text()))
    for page in ("performance.md", "models.md"):
        assert (tmp_path / page).read_text() == (root / "docs" / page).read_text(), page


def test_the_drift_table_shows_the_loop_gap_beside_colmap_and_the_trivial_cameras():
    from benchmarks.run_all import loop_closure_table

    row = {"seconds": 250.0, "peak_memory_gib": 2.1, "loop_gap_m": 0.0312, "loop_pairs": 76, "ate_mean": 0.041,
           "registered": 250}
    r = {"frames": 250, "distinct_frames": 250, "ours": row, "ours_loop_closure": dict(row, loop_gap_m=0.0101),
         "trivial_origin": {"loop_gap_m": 0.08, "ate_mean": 0.55, "registered": 250}}
    lines = loop_closure_table(r)
    assert "| `pixio recon3d` (default) | 250.0 s | 2.1 GiB | 3.1 cm | 4.1 cm | 250 |" in lines, lines
    assert "| `pixio recon3d --loop-closure` | 250.0 s | 2.1 GiB | 1.0 cm | 4.1 cm | 250 |" in lines
    assert "| baseline: every camera at one place |  |  | 8.0 cm | 55.0 cm | 250 |" in lines
    assert "76 pairs" in lines[1] and loop_closure_table({}) == []


def test_the_loop_gap_is_the_error_of_the_offsets_where_the_walk_returns():
    import numpy as np

    from benchmarks.loop_closure import drift, returns

    def at(x: float) -> np.ndarray:
        T = np.eye(4)
        T[0, 3] = x
        return T

    names = [f"{i:03d}" for i in range(100)]
    walk = np.r_[np.linspace(0, 2, 50), np.linspace(2, 0, 50)]  # out and back along x
    truth = {n: at(x) for n, x in zip(names, walk)}
    pairs = returns(truth, apart=40, within=0.05)
    assert pairs and all(int(b) - int(a) >= 40 and abs(walk[int(a)] - walk[int(b)]) < 0.05 for a, b in pairs)
    assert drift(truth, truth, pairs)["loop_gap_m"] == 0.0
    drifted = {n: at(x + 0.004 * i) for i, (n, x) in enumerate(zip(names, walk))}  # 0.4 m off by the end
    assert drift(drifted, truth, pairs)["loop_gap_m"] > 0.1


def test_the_official_parity_the_docs_claim_is_the_last_recorded_run():
    """README and docs/models.md say the official repository's PixioViT gives our features bit for bit: the
    result scripts/official_parity.py last wrote must say so, at every size the README names."""
    root = Path(__file__).resolve().parents[1]
    result = json.loads((root / "benchmarks" / "results" / "official-parity.json").read_text())
    assert result["max_abs_diff"] == 0.0 and result["precision"] == "fp32"
    assert {r["size"] for r in result["sizes"]} == {"256x256", "320x448", "160x96"}
    for page in ("README.md", "docs/models.md"):
        text = " ".join((root / page).read_text().split())
        assert "scripts/official_parity.py" in text and "bit for bit" in text, page


def test_the_range_table_shows_each_band_with_its_share_of_the_truth_and_an_empty_band_as_a_dash():
    from benchmarks.run_all import range_table

    def band(lo, hi, truth, p, r):
        return {"from": lo, "to": hi, "points": 0.5, "truth": truth, "precision@0.05": p, "recall@0.05": r}

    rows = {"scene": {"by_range": [band(0.0, 1.5, 0.07, 0.891, 0.959), band(1.5, None, 0.93, 0.668, 0.699)]},
            "colmap_points": {"by_range": [band(0.0, 1.5, 0.07, 0.958, 0.695), band(1.5, None, 0.93, None, 0.1)]}}
    lines = range_table({"rows": rows})
    assert "| cloud | 0-1.5 m (7% of the truth) | over 1.5 m (93% of the truth) |" in lines, lines
    assert "| `pixio recon3d` (default) | 0.891 / 0.959 | 0.668 / 0.699 |" in lines
    assert "| the sparse points of our SfM | 0.958 / 0.695 | - / 0.100 |" in lines
    assert range_table(None) == [] and range_table({"rows": {"scene": {}}}) == []
