"""``python -m hpcopt`` is the ``hpcopt`` command."""

import sys

from hpcopt.cli import main

sys.exit(main())
