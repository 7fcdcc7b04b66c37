"""`python -m edge` is the same as the `trapcam` command."""

import sys

from edge.cli import main

sys.exit(main())
