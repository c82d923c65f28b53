"""The README's examples run as written (on the bundled models and samples/), so they cannot go stale."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def examples() -> list[str]:
    """The command lines of the README's code blocks marked ``<!-- readme-example -->``."""
    return _marked(ROOT / "README.md", "readme-example")


def doc_examples() -> list[str]:
    """The command lines of the docs' code blocks marked ``<!-- runs -->`` (those that run offline on the
    bundled models and samples/)."""
    return [c for page in sorted((ROOT / "docs").glob("*.md")) for c in _marked(page, "runs")]


def _marked(page: Path, marker: str) -> list[str]:
    blocks = re.findall(rf"<!-- {marker} -->\s*```[a-z]*\n(.*?)```", page.read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("pixio ")]


TOY_BYTES = 200 * 2 ** 20  # an example on the samples writes a toy's worth (the t16 run about 110 MB), not gigabytes


def test_the_readme_has_its_examples():
    found = examples()
    assert len(found) >= 6 and {shlex.split(c)[1] for c in found} >= {"extract", "depth", "segment", "recon3d",
                                                                       "curate", "pretrain"}


@pytest.mark.parametrize("command", examples(), ids=lambda c: shlex.split(c)[1])
def test_a_readme_example_runs_as_written(cli, command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    args = shlex.split(command)[1:]
    code, _, err = cli(args)
    assert code == 0, err
    out = Path(args[args.index("-o") + 1])
    assert out.exists() and (out.is_file() or any(out.iterdir())), out
    written = out.stat().st_size if out.is_file() else sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert written < TOY_BYTES, (command, written)


@pytest.mark.parametrize("command", doc_examples(), ids=lambda c: shlex.split(c)[1])
def test_a_docs_example_that_runs_offline_runs_as_written(cli, command, tmp_path, monkeypatch):
    test_a_readme_example_runs_as_written(cli, command, tmp_path, monkeypatch)


def test_the_docs_mark_examples_that_run():
    assert {shlex.split(c)[1] for c in doc_examples()} >= {"pretrain"}
