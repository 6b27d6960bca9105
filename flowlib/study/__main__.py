"""``python -m flowlib.study``: the study command.

An entry point, not a module to import: it sits on the command-line floor (``flowlib.cli``)
whatever folder it is in, so the study code in this package never imports the CLI above it.
"""

import sys

from flowlib.cli.study import main

sys.exit(main())
