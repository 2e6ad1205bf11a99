"""``python -m wsauth_sync``: the same command line as ``wsauth-sync``."""

import sys

from .cli import main

sys.exit(main())
