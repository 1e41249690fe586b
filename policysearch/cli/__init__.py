"""The `policysearch` command line.

Each sub-command prints a readable table; with ``--json`` stdout holds only one JSON object for
scripts (NaN written as null) and the readable report goes to stderr. ``-q`` / ``-v`` set the log
level; progress bars (stderr) are off without a terminal or with ``TQDM_DISABLE``. User errors exit
with status 2 and a message whose first line says what is wrong (details, if any, indented below);
a diverged training run exits with 3. Every option is checked before any data is loaded or any file
written; ``--help`` shows each option's default, the names a registry accepts, and examples.

- `arguments`: value types that refuse nonsense at parse time, shared option groups, conversions.
- `training`: `train`, `evaluate`, `datasets`, `models`.
- `searching`: `augment`, `schedule`, `compress`, `demo`, through one `search_command`.
- `main`: the parser and `main()`, which maps errors to exit codes.
"""

from policysearch.cli.main import EXIT_DIVERGED, EXIT_USAGE, build_parser, main

__all__ = ["EXIT_DIVERGED", "EXIT_USAGE", "build_parser", "main"]
