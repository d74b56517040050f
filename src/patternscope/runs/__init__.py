"""Run folders: one module per command, from its options to its folder of results.

Each command module holds its options dataclass (whose fields carry their command-line flags, see
:mod:`~patternscope.runs.options`), the function that runs it (checks before work, loads the model and
data, calls the engine, writes the folder atomically), its text output and its ``COMMAND`` declaration
(:class:`~patternscope.runs.command.Command`). :mod:`~patternscope.runs.registry` lists the commands;
:mod:`~patternscope.runs.folders` checks folders and records settings.
"""
