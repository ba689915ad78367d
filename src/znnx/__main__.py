"""`python -m znnx`: the command line. Guarded: Dask's worker processes import this module as their
main module when the command line starts a local cluster."""

import sys

from znnx.cli import main

if __name__ == "__main__":
    sys.exit(main())
