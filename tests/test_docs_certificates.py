"""Every ```python block of docs/certificates.md runs, in order, in one namespace (as a reader would)."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "certificates.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_page_has_examples():
    assert len(python_blocks(PAGE.read_text())) >= 3


def test_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_certificates"}
    for index, block in enumerate(python_blocks(PAGE.read_text())):
        exec(compile(block, f"{PAGE.name}[block {index}]", "exec"), namespace)
