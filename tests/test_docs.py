"""The docs read as a person reads: no wall of prose (a paragraph or bullet over about 8 lines)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINE = 79  # characters a line of prose holds
MOST = 8  # lines a paragraph or bullet may take


def long_paragraphs(text: str) -> list[tuple[int, str]]:
    """(lines, first words) of each paragraph or bullet of Markdown ``text`` longer than MOST lines of LINE
    characters; code blocks, tables and generated benchmark tables are not prose."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"<!-- bench:[\w-]+:start -->.*?<!-- bench:[\w-]+:end -->", "", text, flags=re.S)
    out = []
    for part in re.split(r"\n\s*\n|\n(?=\s*- )|\n(?=\s*\d+\. )", text):
        lines = [line for line in part.splitlines() if line.strip() and not line.lstrip().startswith("|")]
        n = -(-sum(len(line) for line in lines) // LINE)
        if n > MOST:
            out.append((n, lines[0].strip()[:60]))
    return out


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "docs").glob("*.md")))
def test_no_paragraph_is_a_wall_of_prose(page):
    found = long_paragraphs((ROOT / "docs" / page).read_text())
    assert not found, f"{page}: paragraphs over {MOST} lines (split them): {found}"


def test_a_wall_of_prose_is_found():
    wall = " ".join(["a sentence of about ten words that goes on and on."] * 20)
    assert long_paragraphs(f"# t\n\n{wall}\n\nshort\n") and not long_paragraphs("short\n\n- one\n- two\n")


PROBE = """<script>
window.addEventListener('load', () => {
  const over = [];
  document.querySelectorAll('.md-typeset pre, .md-typeset table, .md-typeset__scrollwrap').forEach((el) => {
    if (el.scrollWidth > el.clientWidth + 1) over.push(el.tagName + ': ' + el.innerText.slice(0, 50));
  });
  const r = document.createElement('pre');
  r.id = 'pixio-probe';
  r.textContent = JSON.stringify({page: document.documentElement.scrollWidth, window: window.innerWidth,
                                  over: over});
  document.body.appendChild(r);
});
</script>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The docs built as `make docs` builds them (mkdocs, strict)."""
    import shutil
    import subprocess
    import sys

    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mkdocs is not installed (make dev installs it)")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-q", "--site-dir",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.mark.parametrize("page", ["index.html", "recon3d/index.html", "tutorial-video/index.html",
                                  "performance/index.html"])
def test_docs_pages_read_at_1280_px_without_sideways_scrolling(site, page, tmp_path):
    """Each page in headless Chromium at 1280 px: no code block or table scrolls sideways, nor the page."""
    import json
    import subprocess

    from .test_view import chromium

    browser = chromium()
    if browser is None:
        pytest.skip("no chromium (Debian's chromium package) to look at the pages with")
    path = site / page
    probed = path.with_name("probed-" + path.name)
    probed.write_text(path.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([browser, "--headless=new", "--no-sandbox", "--window-size=1280,900",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                          probed.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="pixio-probe">(.*?)</pre>', dom, flags=re.S)
    assert found, "the page did not load in chromium"
    import html

    report = json.loads(html.unescape(found.group(1)))
    assert report["page"] <= report["window"] and not report["over"], (page, report)
