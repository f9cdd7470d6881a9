"""The command line: ``python -m attrcore`` (console script ``attrcore``).

Interface: :func:`attrcore.cli.main.main` ``(argv) -> exit status``; errors a user can cause
print ``error: ...`` and exit with status 2.

Implementations:

- ``main`` — the parser and ``main``;
- ``common`` — flags and helpers shared by the subcommands;
- ``run_commands`` — ``train``, ``score``, ``attribute``, ``runs``, ``show``, ``delete``;
- ``attribute`` — ``attribute --method`` for the baseline methods;
- ``eval_commands`` — ``evaluate`` and ``bench``;
- ``mislabel_commands`` — ``mislabel``, ``marks``, ``relabel``, ``export``.
"""
