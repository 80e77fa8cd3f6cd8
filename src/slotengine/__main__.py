"""``python -m slotengine``: the command line (see slotengine.cli)."""
import sys

from .cli import main

sys.exit(main())
