"""``python -m coinfeed``: the same command line as the ``coinfeed`` script."""

import sys

from coinfeed.cli import main

if __name__ == "__main__":
    sys.exit(main())
