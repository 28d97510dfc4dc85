"""`python -m openmlff ...` is the `openmlff` command."""

import sys

from .cli import main

sys.exit(main())
