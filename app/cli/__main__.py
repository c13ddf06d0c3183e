"""`python -m app.cli`: the `podgraft` command."""

import sys

from app.cli import main

sys.exit(main())
