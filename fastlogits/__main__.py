"""``python -m fastlogits``: the ``fastlogits`` command (see :mod:`fastlogits.tools.cli`)."""
from fastlogits.tools.cli import main

raise SystemExit(main())
