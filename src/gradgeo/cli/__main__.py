"""``python -m gradgeo.cli``: the ``gradgeo`` command."""

import sys

from gradgeo.cli.main import main

sys.exit(main())
