"""`make mutants`: mutation testing (mutmut) of the modules that decide geometry and reuse, and the score table.

For each module below, mutmut copies the project into ``mutants/``, plants each of its small changes (an
operator, a constant, a dropped call) one at a time and runs the tests that reach the changed function (from
the module's test files, the slow end-to-end ones left out: ``-m "not slow"``). A mutant no test notices
survives. Mutants judged equivalent (no behaviour changes: a bound that cannot be reached, a copy the caller
never uses) are listed with why in ``scripts/mutants_equivalent.txt`` and left out of the score. The table of
killed / non-equivalent per module goes between the ``mutants`` markers of docs/development.md, with the
survivors named in ``mutants/survivors.txt``. Not in CI: a whole run takes hours on 2 cores.

mutmut copies the working tree as it is when a module starts: run it on a tree whose tests pass (while others
are editing this one, a ``git worktree add --detach`` of a commit, with ``--shared`` pointing at the data).

    python scripts/mutants.py                      # every module (hours)
    python scripts/mutants.py heads/recon/depth_fit.py pixio_cli/resume.py
    python scripts/mutants.py --max-children 1 pixio_cli/sliding.py   # or MUTANTS_MAX_CHILDREN=1
    python scripts/mutants.py pixio_cli/sliding.py     # again, after new tests: its survivors checked again
    python scripts/mutants.py --no-run pixio_cli/sliding.py   # the table from a run stopped midway
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "development.md"
EQUIVALENT = ROOT / "scripts" / "mutants_equivalent.txt"

MODULES = {  # module: the test files that hold its tests (those that call its functions)
    "heads/recon/depth_fit.py": ["tests/test_dense.py"],
    "heads/recon/mvs.py": ["tests/test_mvs.py"],
    "heads/recon/fusion.py": ["tests/test_dense.py"],
    "heads/recon/depth_poses.py": ["tests/test_depth_poses.py"],
    "heads/recon/known_poses.py": ["tests/test_known_poses.py"],
    "heads/recon/known_cameras.py": ["tests/test_known_cameras.py"],
    "heads/recon/sfm.py": ["tests/test_sfm_settings.py"],
    "heads/recon/placement.py": ["tests/test_placement.py"],
    "heads/recon/chunks.py": ["tests/test_chunks.py"],
    "heads/recon/cleaning.py": ["tests/test_cleaning.py"],
    "heads/recon/scene_files.py": ["tests/test_scene_files.py"],
    "heads/geometry.py": ["tests/test_geometry.py"],
    "pixio_cli/sliding.py": ["tests/test_seams.py"],
    "pixio_cli/resume.py": ["tests/test_trust.py", "tests/test_extract.py"],
    "heads/pointmap/cameras.py": ["tests/test_pointmap_inputs.py"],
    "heads/pointmap/model.py": ["tests/test_pointmap_inputs.py"],
}

# modules of which only some functions decide geometry (the rest is COLMAP's own work, or a network's layers
# that the checkpoint tests pin): only these functions' mutants are run and scored ("Class.method" for methods)
FUNCTIONS: dict[str, list[str]] = {
    "heads/recon/sfm.py": ["run_sfm", "_run_sfm", "_checked_lens", "loop_pairs", "_set_cameras", "_held", "_map",
                           "keyframe_names", "_map_global", "_map_incremental"],
    "heads/pointmap/model.py": ["depth_inputs", "pose_inputs", "decode", "PointMapModel._depth_tokens",
                                "PointMapModel._pose_tokens", "PointMapModel.forward"],
}

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", 37: "killed",
          2: "not checked", -11: "killed"}  # mutmut's exit codes (mutmut/stats.py); 2: the check was interrupted
# (Ctrl-C); -11: the tests crashed (a segmentation fault in Open3D) with the mutant in place: the run fails


def equivalent() -> dict[str, str]:
    """Mutant name -> why it changes no behaviour (scripts/mutants_equivalent.txt: ``name  # why`` lines)."""
    out = {}
    if EQUIVALENT.exists():
        for line in EQUIVALENT.read_text().splitlines():
            name, _, why = line.partition("#")
            if name.strip():
                out[name.strip()] = why.strip()
    return out


def run_module(module: str, tests: list[str], shared: Path, children: int = 2) -> dict[str, str]:
    """mutmut on one module with its tests; the status of each of its mutants. mutmut keeps what it has checked
    in ``mutants/``: a run stopped midway goes on where it stopped (and redoes what changed since).

    mutmut keeps one record of which tests reach which function (``mutants/mutmut-stats.json``), and redoes
    every mutant when the test selection in it differs (as it does from one module to the next here): so each
    module's record is kept aside (``mutants/stats/``) and put back for its next run, which then redoes only
    what changed. mutmut also keeps a survivor's verdict when only the tests changed: so the survivors of the
    module's last run (and mutants no test reached) are checked again by name, against the tests as they are
    now."""
    package = module.split("/")[0]
    config = ROOT / "setup.cfg"
    if config.exists():
        raise SystemExit(f"{config} exists: this script writes its own for each module")
    meta = ROOT / "mutants" / (module + ".meta")
    stats = ROOT / "mutants" / "mutmut-stats.json"
    kept = ROOT / "mutants" / "stats" / (module.replace("/", "+") + ".json")
    if kept.exists():
        shutil.copy(kept, stats)
    else:  # another module's record would say no test reaches this one's functions (when the tests are the same)
        stats.unlink(missing_ok=True)
    # whether the verdicts in mutants/ were reached with this test selection (mutmut keeps them either way)
    selection = hashlib.sha256(repr(tuple(tests)).encode()).hexdigest()[:12]  # as mutmut's config_fingerprint
    resumed = stats.exists() and json.loads(stats.read_text()).get("config_fingerprint", {}).get("test_selection") \
        == selection
    config.write_text("[mutmut]\n"
                      f"source_paths={package}\n"
                      f"only_mutate={module}\n"
                      "also_copy=\n  heads\n  pixio_cli\n  pretrain\n  benchmarks\n  samples\n  scripts\n"
                      "pytest_add_cli_args_test_selection=\n" + "".join(f"  {t}\n" for t in tests) +
                      "pytest_add_cli_args=\n  -m\n  not slow\n  -p\n  no:randomly\n"
                      "process_isolation=forkserver\n")
    try:
        env = {**os.environ, "PIXIO_SHARED_DATA": str(shared), "OMP_NUM_THREADS": "1"}
        mutmut = [sys.executable, "-m", "mutmut", "run", "--max-children", str(children)]
        judged = equivalent()  # (left as they are)
        codes = {n: c for n, c in _codes(meta).items() if _in_scope(module, n)}
        if resumed:  # first: the survivors, which are what new tests are written for
            again = sorted(n for n, code in codes.items() if code in (0, 5, 33) and n not in judged)
        else:  # verdicts reached with another test selection, which mutmut would keep for unchanged functions
            again = sorted(codes)
        if again:
            print(f"checking {len(again)} {'survivors of the last run' if resumed else 'mutants checked with other tests'}"
                  " again, against the tests as they are now", file=sys.stderr, flush=True)
            subprocess.run(mutmut + again, cwd=ROOT, env=env, check=False)
        subprocess.run(mutmut + _patterns(module), cwd=ROOT, env=env, check=False)  # then those not checked yet
        if stats.exists():
            kept.parent.mkdir(exist_ok=True)
            shutil.copy(stats, kept)
        return statuses(module)
    finally:
        config.unlink(missing_ok=True)


def statuses(module: str) -> dict[str, str]:
    """The status of each mutant of ``module`` as mutmut has recorded it in ``mutants/``."""
    return {name: "not checked" if code is None else STATUS.get(code, "suspicious")
            for name, code in _codes(ROOT / "mutants" / (module + ".meta")).items() if _in_scope(module, name)}


def _function(mutant: str) -> str:
    """The function a mutant changes: ``pkg.mod.x_name__mutmut_3`` -> ``name``, ``pkg.mod.xǁCǁm__mutmut_3`` ->
    ``C.m`` (mutmut's names)."""
    local = mutant.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]
    return local[2:].replace("ǁ", ".", 1).rstrip("ǁ") if local.startswith("xǁ") else local[2:]


def _in_scope(module: str, mutant: str) -> bool:
    return module not in FUNCTIONS or _function(mutant) in FUNCTIONS[module]


def _patterns(module: str) -> list[str]:
    """mutmut's name patterns for the functions of ``module`` that are scored (none: all of it)."""
    dotted = module.removesuffix(".py").replace("/", ".")
    return [f"{dotted}.xǁ{name.replace('.', 'ǁ')}__mutmut_*" if "." in name else f"{dotted}.x_{name}__mutmut_*"
            for name in FUNCTIONS.get(module, [])]


def _codes(meta: Path) -> dict[str, int | None]:
    """mutmut's exit code of each mutant of a module (None: not checked yet), from its ``.meta`` file."""
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}


def table(scores: dict[str, dict[str, str]], judged: dict[str, str]) -> list[str]:
    """The score table, as Markdown."""
    out = [f"Written by `make mutants` (`scripts/mutants.py`, mutmut) on {datetime.date.today().isoformat()}; "
           "a mutant counts as killed when a test fails (or times out) with it in place.", "",
           "| module | mutants | checked | equivalent | killed | survived | no test reaches it | **score** |",
           "|---|---|---|---|---|---|---|---|"]
    for module, statuses in scores.items():
        same = [n for n in statuses if n in judged]
        checked = {n: s for n, s in statuses.items() if s != "not checked"}
        counted = {n: s for n, s in checked.items() if n not in judged}
        killed = sum(s in ("killed", "timeout") for s in counted.values())
        survived = sum(s == "survived" for s in counted.values())
        untested = sum(s == "no tests" for s in counted.values())
        score = f"**{killed / len(counted):.0%}**" if counted else "-"
        scope = f" ({', '.join(FUNCTIONS[module])} only)" if module in FUNCTIONS else ""
        out.append(f"| `{module}`{scope} | {len(statuses)} | {len(checked)} | {len(same)} | {killed} | {survived} | {untested} | "
                   f"{score} |")
    return out


def write_doc(lines: list[str]) -> None:
    text = DOC.read_text()
    start, end = "<!-- mutants:start -->", "<!-- mutants:end -->"
    block = start + "\n" + "\n".join(lines) + "\n" + end
    if start in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n## Mutation testing\n\n" + block + "\n"
    DOC.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help="modules to run (default: all of MODULES)")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--max-children", type=int, default=int(os.environ.get("MUTANTS_MAX_CHILDREN", "2")),
                    help="mutants checked at once (default: $MUTANTS_MAX_CHILDREN, else 2)")
    ap.add_argument("--no-run", action="store_true",
                    help="run nothing: the table from what mutmut has checked so far (mutants/, as a run left it)")
    args = ap.parse_args()
    chosen = args.modules or list(MODULES)
    results_file = ROOT / "scripts" / "mutants_results.json"
    scores = json.loads(results_file.read_text()) if results_file.exists() else {}
    for module in chosen:
        if not args.no_run:
            print(f"mutants of {module} ...", file=sys.stderr, flush=True)
        scores[module] = statuses(module) if args.no_run else run_module(module, MODULES[module], args.shared,
                                                                         args.max_children)
        results_file.write_text(json.dumps(scores, indent=1, sort_keys=True) + "\n")
    judged = equivalent()
    survivors = [f"{name}: {status}" for statuses in scores.values() for name, status in sorted(statuses.items())
                 if status not in ("killed", "timeout", "not checked") and name not in judged]
    (ROOT / "mutants").mkdir(exist_ok=True)
    (ROOT / "mutants" / "survivors.txt").write_text("\n".join(survivors) + "\n")
    # mutmut numbers a function's mutants in order: when the function changes, a listed number names another
    # mutant. A listed one that a test kills is such a stale entry (an equivalent mutant cannot be killed).
    stale = sorted(name for statuses in scores.values() for name, status in statuses.items()
                   if name in judged and status in ("killed", "timeout"))
    if stale:
        print(f"{len(stale)} mutants listed as equivalent were killed: their functions changed since; judge "
              "them again in scripts/mutants_equivalent.txt:\n  " + "\n  ".join(stale), file=sys.stderr)
    lines = table({m: scores[m] for m in MODULES if m in scores}, judged)
    write_doc(lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
