"""``python -m receiver`` runs the CLI."""

import sys

from receiver.cli import main

sys.exit(main())
