"""`python -m addon.cli`: the `corral` command."""

import sys

from addon.cli.main import main

sys.exit(main())
