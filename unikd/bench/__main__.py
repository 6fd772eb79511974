"""`python -m unikd.bench`: see `unikd.bench.cli`."""
import sys

from .cli import console_main, main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(console_main())
