"""``python -m training.search``: see ``training.search.cli``."""

import sys

from .cli import main

sys.exit(main())
