"""``python -m stacdrop.app.cli``: the ``stacdrop`` command without its console script (the tests run it so)."""

import sys

from stacdrop.app.cli import main

sys.exit(main())
