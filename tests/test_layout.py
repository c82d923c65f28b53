"""The layout the docs draw is the layout of the code: imports, function sizes, calls."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pixio_cli", "heads", "pretrain")
LONGEST = 80  # lines of a function's body, past its docstring


def _part(module: str) -> str | None:
    """The box of the layout picture a module belongs to."""
    parts = module.split(".")
    if parts[0] == "pixio_cli":
        if parts[1:2] == ["commands"]:
            return "pixio_cli/commands"
        return "pixio_cli/cli" if parts[1:2] in (["cli"], ["__main__"]) else "pixio_cli"
    if parts[0] == "heads":
        return f"heads/{parts[1]}" if parts[1:2] and parts[1] in ("dense", "pointmap", "recon") else "heads"
    return "pretrain" if parts[0] == "pretrain" else None


def _sources(roots=PACKAGES):
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


def _imports() -> dict[tuple[str, str], set[str]]:
    """(importer's box, imported box) -> the files with such an import, lazy imports included."""
    edges: dict[tuple[str, str], set[str]] = {}
    for path, tree in _sources():
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        package = module.split(".")[:-1]  # what a relative import starts from (for __init__.py too)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                names = [".".join(base + ([node.module] if node.module else []))] if node.level else [node.module]
            else:
                continue
            for name in names:
                a, b = _part(module), _part(name)
                if b is not None and a != b:
                    edges.setdefault((a, b), set()).add(str(path.relative_to(ROOT)))
    return edges


def _drawn() -> set[tuple[str, str]]:
    """The import list under the picture in docs/development.md."""
    text = (ROOT / "docs" / "development.md").read_text()
    block = re.search(r"```text\n(.*?)```", text, re.S).group(1)
    edges = set()
    for line in block.strip().splitlines():
        a, bs = line.split("->")
        edges |= {(a.strip(), b.strip()) for b in bs.split(",")}
    return edges


def test_the_imports_are_the_ones_the_docs_draw():
    found, drawn = _imports(), _drawn()
    undrawn = {f"{a} -> {b} ({', '.join(sorted(files))})" for (a, b), files in found.items() if (a, b) not in drawn}
    unused = {f"{a} -> {b}" for a, b in drawn if (a, b) not in found}
    assert not undrawn, f"imports the docs do not draw: {sorted(undrawn)}"
    assert not unused, f"arrows in the docs no import makes: {sorted(unused)}"


def test_heads_import_pointmap_from_dense_in_one_place_and_no_command():
    found = _imports()
    assert found[("heads/dense", "heads/pointmap")] == {"heads/dense/predict.py"}
    assert [a for a, b in found if b == "pixio_cli/commands"] == ["pixio_cli/cli"]
    assert not [a for a, b in found if b == "pixio_cli/cli"]
    for path, tree in _sources(("heads", "pretrain")):
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | \
            {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "typer" not in names, f"{path.relative_to(ROOT)} imports typer: the CLI's, not the core's"


# What the modules split by job may import of ours (lazy imports included): the maths stays plain, the model
# knows no files, and Open3D is reached through one module.
OWN_IMPORTS = {
    "heads/geometry.py": set(),  # NumPy only
    "heads/open3d_access.py": {"pixio_cli.errors"},
    "heads/writers3d.py": {"pixio_cli.errors", "pixio_cli.writers", "heads.open3d_access"},
    "heads/recon/cleaning.py": {"heads.open3d_access", "heads.pointmap.predictions", "heads.recon.workspace"},
    # recon3d's data path: the views, chunks of predictions, their placement on the cameras, then the outputs;
    # a stage reaches no later one (the run itself, pipeline.py, calls them in order)
    "heads/recon/views.py": {"pixio_cli.errors", "pixio_cli.images", "heads.recon.chunks", "heads.recon.known_cameras",
                             "heads.recon.known_depth", "heads.recon.workspace"},
    "heads/recon/chunks.py": {"pixio_cli.errors", "pixio_cli.writers", "heads.geometry", "heads.pointmap.predictions",
                              "heads.recon.workspace"},
    "heads/recon/placement.py": {"pixio_cli.errors", "heads.geometry", "heads.pointmap.predictions",
                                 "heads.recon.camera_files", "heads.recon.chunks", "heads.recon.depth_fit",
                                 "heads.recon.workspace"},
    "heads/recon/fusion.py": {"heads.geometry", "heads.pointmap.predictions", "heads.recon.mvs", "heads.recon.workspace"},
    "heads/recon/mvs.py": set(),
    "heads/recon/preview.py": {"heads.geometry", "heads.pointmap.predictions"},
    "heads/recon/mesh.py": {"heads.geometry", "heads.open3d_access", "heads.pointmap.predictions",
                            "heads.recon.workspace"},
    "heads/pointmap/cameras.py": {"heads.geometry"},
    "heads/pointmap/model.py": {"pixio_cli.encoder", "pixio_cli.errors", "pixio_cli.model_ids", "pixio_cli.vit",
                                "heads.dense.dpt", "heads.pointmap.cameras"},
    "heads/pointmap/checkpoint.py": {"pixio_cli.checkpoints", "pixio_cli.encoder", "pixio_cli.errors",
                                     "pixio_cli.model_ids", "heads.pointmap.model"},
    "heads/pointmap/depth.py": {"heads.dense.model", "heads.pointmap.cameras", "heads.pointmap.model"},
}


def _own_imports(path: Path, tree: ast.Module) -> set[str]:
    """The modules of ours that one file imports, lazily or not."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts).split(".")[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            names.add(".".join(base + ([node.module] if node.module else [])))
    return {n for n in names if n.split(".")[0] in PACKAGES}


def test_modules_split_by_job_import_only_what_their_job_needs():
    trees = {str(path.relative_to(ROOT)): (path, tree) for path, tree in _sources(("heads",))}
    assert set(OWN_IMPORTS) <= set(trees), sorted(set(OWN_IMPORTS) - set(trees))
    extra = {name: sorted(_own_imports(*trees[name]) - allowed) for name, allowed in OWN_IMPORTS.items()}
    assert not {k: v for k, v in extra.items() if v}, extra
    # Open3D is imported where it is slow to do without: through heads/open3d_access.py, never at a module's top
    for path, tree in _sources(("heads",)):
        top = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names} | \
            {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in top if m.split(".")[0] == "open3d"}, f"{path.relative_to(ROOT)} imports open3d at its top"


def _body_lines(node: ast.FunctionDef) -> int:
    body = node.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return node.end_lineno - body[0].lineno + 1


LONGEST_MODULE = 450  # lines of a module under heads/: one a newcomer can hold in their head


def test_no_module_under_heads_is_longer_than_a_newcomer_can_hold():
    long = [f"{path.relative_to(ROOT)} ({len(path.read_text().splitlines())} lines)" for path, _ in _sources(("heads",))
            if len(path.read_text().splitlines()) > LONGEST_MODULE]
    assert not long, f"modules over {LONGEST_MODULE} lines: split them by job: {long}"


def test_no_function_is_longer_than_a_screen():
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({_body_lines(node)} lines)"
            for path, tree in _sources((*PACKAGES, "benchmarks", "scripts"))
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and _body_lines(node) > LONGEST]
    assert not long, long


def test_our_functions_take_more_than_four_arguments_by_name():
    ours: set[str] = set()
    for _, tree in _sources((*PACKAGES, "benchmarks", "scripts")):
        ours |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))} - {"view"}
    calls = []
    for path, tree in _sources((*PACKAGES, "benchmarks", "scripts", "tests")):
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or len(node.args) <= 4 or any(isinstance(a, ast.Starred) for a in node.args):
                continue
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in ("cv2", "torch", "np"):
                continue  # libraries' calls, as their documentation writes them
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in ours and name != "pixio":  # scripts/model_card.py's pixio(*argv): command-line words
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno} {name} ({len(node.args)} positional)")
    assert not calls, calls
