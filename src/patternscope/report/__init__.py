"""Looking at results: figures and the self-contained ``report.html`` of a run folder.

- :mod:`~patternscope.report.figures`: every figure (matplotlib, PNG), from plain numbers and tensors;
- :mod:`~patternscope.report.html`: the page's building blocks (escaped text, tables, embedded images);
- :mod:`~patternscope.report.page`: :class:`RunFolder` and :func:`render`, which assembles and writes a page;
- one module per run kind (``dominant``, ``compare``, ``transfer``, ``classwise``, ``scan``,
  ``downstream``, ``harden``), each with ``build(run) -> (title, sections)``.

Which builder a folder gets is declared by the command that writes it (:mod:`patternscope.runs.registry`);
:func:`patternscope.runs.registry.write_report` picks it.
"""
