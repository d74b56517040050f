"""MkDocs hook: the CLI page's reference section is generated from patternscope's command registry at
build time (``patternscope.cli.reference``), so it always matches the installed code."""

from __future__ import annotations

from typing import Any

MARKER = "<!-- cli-reference -->"


def on_page_markdown(markdown: str, page: Any, **_kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    from patternscope.cli.reference import cli_reference

    return markdown.replace(MARKER, cli_reference())
