"""`python -m rapgen …` is the same as the `rapgen` command."""

import sys

from rapgen.cli.commands import main

sys.exit(main())
