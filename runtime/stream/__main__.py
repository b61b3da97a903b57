"""``python -m runtime.stream``: see ``runtime.stream.cli``."""

import sys

from .cli import main

sys.exit(main())
