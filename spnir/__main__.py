"""``python -m spnir`` (and ``torchrun -m spnir train``) runs the command line."""
import sys

from spnir.cli import main

sys.exit(main())
