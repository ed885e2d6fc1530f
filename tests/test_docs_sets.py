"""docs/sets_and_penalties.md runs as written: its ```python blocks in order, in one namespace;
and the docstring examples of the modules it documents."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "sets_and_penalties.md"


def test_guide_blocks_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 15
    shared: dict = {}
    for number, source in enumerate(blocks, start=1):
        exec(compile(source, f"{GUIDE.name}, block {number}", "exec"), shared)


@pytest.mark.parametrize("module", ["convexnet.sets", "convexnet.penalties", "solvers.prox"])
def test_docstring_examples_run(module):
    failures, tried = doctest.testmod(importlib.import_module(module))
    assert tried > 0 and failures == 0
