"""``python -m pipelines.cli``: the ``equivar`` command."""

import sys

from . import main

sys.exit(main())
