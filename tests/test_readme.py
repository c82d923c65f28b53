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


def claims(command: str) -> str:
    """The README's text after an example, up to the next section: what it says the command writes."""
    text = (ROOT / "README.md").read_text()
    at = text.index(command) + len(command)
    end = text.find("\n**", at)
    return text[at:end if end > 0 else None]


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
    if command in examples():
        _holds_what_the_readme_says(command, out)


def _holds_what_the_readme_says(command: str, out: Path) -> None:
    """Every file the README names after an example exists (`out/...`, or a bare name inside -o), and every
    array it gives a shape has that shape."""
    import numpy as np

    text = claims(command)
    folder = out if out.is_dir() else out.parent
    named = re.findall(r"`((?:out/[\w./-]+|\w[\w.-]*)\.(?:npz|png|ply|json|pth|jsonl|mp4|safetensors|csv))`", text)
    assert named, f"the README says nothing of what {command} writes"
    for name in named:
        path = Path(name) if name.startswith("out/") else folder / name
        assert path.exists(), f"the README names {name} after '{command}', which wrote no such file"
    for npz in [n for n in named if n.endswith(".npz")]:
        with np.load(npz if npz.startswith("out/") else folder / npz) as z:
            for key, shape in re.findall(r"`(\w+)`\s+\(([\d, ]+)\)", text):
                assert key in z.files and z[key].shape == tuple(int(v) for v in shape.split(",")), (key, z[key].shape)


@pytest.mark.parametrize("command", sorted(set(doc_examples()) - set(examples())), ids=lambda c: shlex.split(c)[1])
def test_a_docs_example_that_runs_offline_runs_as_written(cli, command, tmp_path, monkeypatch):
    """(The README's own examples, repeated on the command pages, run once: above.)"""
    if "-o" in shlex.split(command):
        return test_a_readme_example_runs_as_written(cli, command, tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    code, out, err = cli(shlex.split(command)[1:])
    assert code == 0 and (out.strip() or err.strip()), (command, err)  # a report (evaluate's on the terminal)


COMMAND_PAGES = ["extract.md", "depth-segment.md", "curate.md", "pretrain.md", "recon3d.md", "models-command.md",
                 "train-evaluate.md"]


@pytest.mark.parametrize("page", COMMAND_PAGES)
def test_a_command_page_opens_with_examples_that_run(page):
    """A command page's first code block is its tested examples (marked ``<!-- runs -->``), after at most a
    picture and what the command gives: a reader pastes the first thing they see and it works."""
    text = (ROOT / "docs" / page).read_text()
    first = text.index("```")
    assert text[:first].rstrip().endswith("<!-- runs -->"), f"{page}: its first example is not one that runs"
    assert _marked(ROOT / "docs" / page, "runs"), page


def test_the_docs_mark_examples_that_run():
    assert {shlex.split(c)[1] for c in doc_examples()} >= {"pretrain"}
