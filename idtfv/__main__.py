"""``python -m idtfv``: the ``idtfv`` command."""

import sys

from idtfv.cli import main

sys.exit(main())
