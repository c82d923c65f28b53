"""The benchmark tables say what a ratio is: bold only for ours against a reference at the same precision,
in the reference's best mode."""

from __future__ import annotations

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


def test_a_compiled_run_is_measured_against_the_references_best_mode():
    table = {"extract": {"reference_img_s": 1158.63}}
    r = {"precision": "bfloat16", "ours_img_s": 1365.11, "reference_img_s": 768.07, "ratio": 1.777}
    cell = ratio_cell("extract_compiled", r, table)
    assert cell.startswith("**1.178x** against transformers' best mode (1158.63 img/s)")


def test_the_growth_table_shows_each_size_beside_colmap():
    from benchmarks.run_all import growth_table

    r = {"recon3d": [{"frames": 25, "ours": {"seconds": 24.0, "peak_memory_gib": 1.7, "registered": 25,
                                             "ate_mean": 0.0178},
                      "colmap": {"seconds": 19.0, "peak_memory_gib": 0.3, "matching": "exhaustive", "registered": 0}}],
         "extract": [{"images": 24, "ours_s": 6.6, "reference_s": 8.1, "ratio": 1.23}]}
    lines = growth_table(r)
    assert "| 25 | 24.0 s | 1.7 GiB | 1.8 cm | 19.0 s (exhaustive) | 0.3 GiB | n/a | 25, 0 |" in lines
    assert "| 24 | 6.6 s | 8.1 s | 1.23x |" in lines and growth_table({}) == []
