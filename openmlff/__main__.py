"""`python -m openmlff ...` is the `openmlff` command."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C before the command started: nothing was written
    sys.exit(130)
sys.exit(main())
