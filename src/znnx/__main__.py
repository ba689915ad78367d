"""`python -m znnx`: the command line."""

import sys

from znnx.cli import main

sys.exit(main())
