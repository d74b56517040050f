"""MkDocs hooks for the patternscope site.

- The CLI page's reference section is generated from the command registry at build time
  (``patternscope.cli.reference``), so it always matches the installed code.
- Docstrings cross-reference with Sphinx roles (``:class:`~patternscope.core.patterns.Pattern```), which
  Markdown shows literally; the rendered role becomes plain code (``Pattern``; the last part with ``~``).
"""

from __future__ import annotations

import re
from typing import Any

MARKER = "<!-- cli-reference -->"
ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc):<code>(~?)([\w.]+)</code>")


def on_page_markdown(markdown: str, page: Any, **_kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    from patternscope.cli.reference import cli_reference

    return markdown.replace(MARKER, cli_reference())


def on_page_content(html: str, page: Any, **_kwargs: Any) -> str:
    return ROLE.sub(lambda m: f"<code>{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}</code>", html)
