"""``python -m metarl ...`` (and ``torchrun -m metarl ...``): the ``metarl`` command line."""
import sys

from metarl.cli import main

sys.exit(main())
