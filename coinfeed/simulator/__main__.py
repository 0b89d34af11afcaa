"""``python -m coinfeed.simulator``: run the simulator alone (same as ``coinfeed simulate``)."""

import sys

from coinfeed.simulator.cli import main

sys.exit(main())
