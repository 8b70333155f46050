"""``python -m sfu.loadtest`` runs the load test without the ``sfu`` CLI."""

import sys

from .command import main

sys.exit(main())
