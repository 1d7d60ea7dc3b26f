"""``python -m fastlogits``: the ``fastlogits`` command (see :mod:`fastlogits.cli`)."""

import sys

from fastlogits.cli import main

sys.exit(main())
