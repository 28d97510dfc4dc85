"""`python -m openmlff.cli ...` is the `openmlff` command (scripts and tests run it so)."""

import sys

from . import main

sys.exit(main())
