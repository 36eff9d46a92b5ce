"""Every ```python block of README.md and docs/*.md runs, as a file, and prints what it shows.

Each block runs in its own Python process from the repository root, with this checkout's
``dlg_utils`` first on the path, ``DLG_QUICK=1``, no progress bars, and a fresh temporary
folder as ``TMPDIR`` (a block writes only under ``tempfile``'s folder). A block that runs an
attack, a training, a Flower simulation or a sweep is marked slow. Blocks that are not Python
meant to run are fenced as ```bash or ```text, and are not collected here.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
# calls that run an attack (or train, simulate, sweep): a block with one is slow
SLOW_CALL = re.compile(r"\b(dlg|dlg_batch|attack_view|reference_dlg|run_attacks|attack_sweep|sweep|run_privacy|"
                       r"run_utility|run_pilot|train|run_federated|leakage_sweep)\s*\(")
TIMEOUT_S = 300


def python_blocks() -> list[tuple[str, int, int, str]]:
    """(page relative to the root, index of the block in its page, first line, code)."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for index, match in enumerate(FENCE.finditer(text)):
            line = text.count("\n", 0, match.start(1)) + 1
            found.append((page.relative_to(ROOT).as_posix(), index, line, match.group(1)))
    return found


BLOCKS = python_blocks()


def params(blocks, mark_slow: bool):
    return [pytest.param(page, index, line, code, id=f"{page}[{index}]",
                         marks=[pytest.mark.slow] if mark_slow and SLOW_CALL.search(code) else [])
            for page, index, line, code in blocks]


def test_the_pages_have_python_blocks():
    pages = {page for page, *_ in BLOCKS}
    assert "README.md" in pages, "the README's API example is a ```python block"
    assert len(BLOCKS) >= len(pages)


@pytest.mark.parametrize("page, index, line, code", params(BLOCKS, mark_slow=False))
def test_block_is_a_script_that_prints(page, index, line, code):
    """A block must be valid Python that prints its result: a bare expression at its end shows
    nothing when the block runs as a file."""
    tree = ast.parse(code, filename=f"{page}:{line}")
    prints = [n for n in ast.walk(tree)
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
    assert prints, f"{page}:{line}: the block prints nothing"
    last = tree.body[-1]
    assert not (isinstance(last, ast.Expr) and not isinstance(last.value, ast.Call)), \
        f"{page}:{line + last.lineno - 1}: a bare expression at the end shows nothing; print it"


@pytest.mark.parametrize("page, index, line, code", params(BLOCKS, mark_slow=True))
def test_block_runs(page, index, line, code):
    # a short folder: Ray (and Flower's simulation, on Ray) put Unix sockets under TMPDIR,
    # whose paths may not exceed 107 bytes
    with tempfile.TemporaryDirectory(prefix="dlgdoc") as tmp:
        script = Path(tmp) / f"block{index}.py"
        script.write_text(code, encoding="utf-8")
        env = {**os.environ, "DLG_QUICK": "1", "DLG_PROGRESS": "0", "MPLBACKEND": "Agg", "TMPDIR": tmp,
               "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        try:
            done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{page}:{line}: the block ran longer than {TIMEOUT_S} s")
    assert done.returncode == 0, (f"{page}:{line}: the block failed (exit {done.returncode})\n"
                                  f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
    assert done.stdout.strip(), f"{page}:{line}: the block printed nothing"


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    """Every relative link and image of a page points at a file of the repository."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    targets = [t.split("#")[0] for t in LINK.findall(text) if "://" not in t and not t.startswith("#")]
    missing = [t for t in targets if t and not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)}: broken links {missing}"


def test_code_map_lists_modules_bottom_up():
    """The README's code map says each module imports only modules listed before it: check
    every ``from .x import`` of every module of the package (its functions' too)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## The code, bottom up"):text.index("## Documentation")]
    order = []
    for line in section.splitlines():
        if line.startswith("| `"):
            order += re.findall(r"`(\w+)`", line.split("|")[1])
    package = ROOT / "dlg_utils"
    modules = {p.stem for p in package.glob("*.py")} - {"__init__"}
    assert sorted(set(order)) == sorted(modules), "the code map lists every module once"
    for name in order:
        tree = ast.parse((package / f"{name}.py").read_text(encoding="utf-8"))
        used = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1
                and n.module}
        late = [m for m in used if order.index(m) > order.index(name)]
        assert not late, f"{name} imports {late}, listed after it"


def test_the_readme_headline_is_notebook_9s():
    """The README's headline table and sentences are notebook 9's last output, as committed:
    a rerun that changes a number must change the README too."""
    import json
    cells = json.loads((ROOT / "notebooks" / "09_privacy_utility_frontier.ipynb").read_text(encoding="utf-8"))["cells"]
    blocks = ["".join(o["data"]["text/markdown"]) for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])
              if "text/markdown" in o.get("data", {}) and "<!-- notebook 9's headline -->" in "".join(o["data"]["text/markdown"])]
    assert len(blocks) == 1, "notebook 9 renders its README headline once"
    assert "64 Fashion-MNIST test images" in blocks[0] and "| none |" in blocks[0]  # a full run, not quick mode
    assert blocks[0] in (ROOT / "README.md").read_text(encoding="utf-8"), \
        "README.md does not quote notebook 9's headline block as rendered: paste it again"
