"""`python -m rapgen …` is the same as the `rapgen` command."""

import sys

from .cli import main

sys.exit(main())
