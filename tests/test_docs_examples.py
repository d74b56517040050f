"""Every Python example in the README and the docs runs as written (in a scratch folder), one page at a
time, its blocks in order in one namespace."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _examples(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


PAGES_WITH_EXAMPLES = [p for p in PAGES if _examples(p)]


def test_the_readme_and_the_api_page_have_examples():
    assert {p.name for p in PAGES_WITH_EXAMPLES} >= {"README.md", "api.md"}


def test_examples_use_only_top_level_names():
    for page in PAGES_WITH_EXAMPLES:
        for code in _examples(page):
            assert not re.search(r"^\s*(from patternscope\.|import patternscope\.)", code, re.M), (page.name, code)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=lambda p: p.name)
def test_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__example__"}
    for i, code in enumerate(_examples(page)):
        try:
            exec(compile(code, f"{page.name} example {i + 1}", "exec"), namespace)
        except Exception as exc:  # name the example that failed
            raise AssertionError(f"{page.name} example {i + 1} failed: {type(exc).__name__}: {exc}") from exc
    assert os.getcwd() == str(tmp_path)
