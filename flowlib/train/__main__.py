"""``python -m flowlib.train`` (and ``torchrun ... -m flowlib.train``): the training command.

An entry point, not a module to import: it sits on the command-line floor (``flowlib.cli``)
whatever folder it is in, so the loop in this package never imports the CLI above it.
"""

import sys

from flowlib.cli.train import main

sys.exit(main())
