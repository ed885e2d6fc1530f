"""Every ```python block of the README and of each docs page runs, in order, in one namespace per page
(as a reader would run them); and so do the docstring examples of the public modules."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks((ROOT / p).read_text())])
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_" + Path(page).stem}
    for index, block in enumerate(python_blocks((ROOT / page).read_text())):
        exec(compile(block, f"{page}[block {index}]", "exec"), namespace)


def test_user_guides_have_examples():
    for page in ("README.md", "docs/nettrim.md"):
        assert len(python_blocks((ROOT / page).read_text())) >= 1, page


DOCTESTED = ["convexnet.nettrim", "convexnet.certificates.layer", "convexnet.programs.program",
             "convexnet.programs.gram", "convexnet.fits", "convexnet.sets", "convexnet.penalties",
             "convexnet.training", "convexnet.nn", "convexnet.cluster", "solvers.prox",
             "solvers.graph_form",
             "solvers.admm"]


@pytest.mark.parametrize("module", DOCTESTED)
def test_docstring_examples_run(module):
    failures, tried = doctest.testmod(importlib.import_module(module))
    assert tried > 0 and failures == 0
