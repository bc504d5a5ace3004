"""``python -m synaptic_geometry.identify``: the identify command."""

import sys

from synaptic_geometry.identify.cli import main

sys.exit(main(prog="python -m synaptic_geometry.identify"))
