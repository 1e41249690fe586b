"""`python -m policysearch.cli ...`: the same as the `policysearch` command."""

import sys

from policysearch.cli import main

sys.exit(main())
