"""The README's examples run as written (on the bundled models and samples/), so they cannot go stale."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def examples() -> list[str]:
    """The command lines of the README's code blocks marked ``<!-- readme-example -->``."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- readme-example -->\s*```[a-z]*\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("pixio ")]


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
