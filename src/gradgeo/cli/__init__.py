"""The ``gradgeo`` command line (the top layer): one parser tree, :func:`build_parser`, and :func:`main`.

``python -m gradgeo.cli ...`` (and ``torchrun ... -m gradgeo.cli ...``) runs it as the ``gradgeo`` command does.
"""

from gradgeo.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
