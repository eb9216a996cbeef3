"""`python -m kzoo` runs the `kzoo` command."""

import sys

from kzoo.cli import main

sys.exit(main())
