import sys

from .cli import main

# Guarded: spawn and forkserver workers import this module under another name.
if __name__ == "__main__":
    sys.exit(main())
