"""``python -m analysis --results DIR [--table CSV] [--out DIR]`` - see ``--help``."""

import sys

from analysis.cli import main

sys.exit(main())
