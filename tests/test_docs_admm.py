"""docs/admm.md runs as written (its ```python blocks in order, in one namespace), and so do the
docstring examples of the modules it documents."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest
import torch

from tests.test_docs import python_blocks

PAGE = Path(__file__).resolve().parents[1] / "docs" / "admm.md"


@pytest.fixture(autouse=True)
def single_thread():
    """The examples are tiny layers, which run faster on one thread (see the page's practical notes)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_page_blocks_run_in_order():
    blocks = python_blocks(PAGE.read_text())
    assert blocks, "docs/admm.md has no ```python block"
    namespace: dict = {"__name__": "docs_admm"}
    for number, block in enumerate(blocks, start=1):
        exec(compile(block, f"{PAGE.name}, python block {number}", "exec"), namespace)


@pytest.mark.parametrize("module", ["solvers.graph_form", "solvers.admm"])
def test_docstring_examples_run(module):
    failures, tried = doctest.testmod(importlib.import_module(module))
    assert tried > 0 and failures == 0
