"""``python -m pyscst``: the ``pyscst`` command."""

import sys

from pyscst.supervision.cli import main

sys.exit(main())
