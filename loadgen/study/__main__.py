"""``python -m loadgen.study``."""

import sys

from loadgen.study.cli import main

sys.exit(main())
