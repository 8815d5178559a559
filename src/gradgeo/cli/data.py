"""``gradgeo data fetch``: download the built-in datasets (:func:`gradgeo.data.fetch.fetch_dataset`)."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from gradgeo.data.fetch import MIRROR_VAR, RELEASES, fetch_dataset
from gradgeo.data.sources import DATASETS, ENV_VAR

__all__ = ["add_data_parser"]

_FETCH = ("Download the original release files of each DATASET, check each against its published SHA-256 checksum "
          "and put them where --dataset looks without --data-dir: DIR/fashion-mnist/ and DIR/mnist/ (the four .gz "
          "IDX files), DIR/cifar-10-batches-py/ and DIR/cifar-100-python/ (unpacked from the python tarball, which "
          "stays in DIR). A file is written as NAME.part and renamed once it matches; an interrupted download "
          "continues where it stopped when run again; files already present are checked and kept, and one that "
          "does not match is an error, never overwritten.")
_MIRROR = (f"{MIRROR_VAR}=URL downloads every file from URL/<its path under DIR> instead (a folder filled by "
           "gradgeo data fetch, served over HTTP, is such a mirror); the checksums are checked all the same.")


def _cmd_fetch(args: argparse.Namespace) -> None:
    for name in args.datasets:
        fetch_dataset(name, args.dir, progress=False if args.quiet else None, log=None if args.quiet else print)


def add_data_parser(sub: Any) -> None:
    """The ``data`` command and its ``fetch`` subcommand."""
    group = sub.add_parser("data", help="get the built-in datasets (data fetch)",
                           description="The built-in datasets: gradgeo data fetch downloads them.")
    commands = group.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    sources = [f"  {name:<14} {file.url}" for name, release in RELEASES.items() for file in release.files]
    p = commands.add_parser(
        "fetch", help="download datasets from their canonical locations, checked against SHA-256",
        description=textwrap.fill(_FETCH, 100), formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(["downloaded from:", *sources, "", textwrap.fill(_MIRROR, 100)]))
    p.add_argument("datasets", nargs="+", choices=DATASETS, metavar="DATASET", help=", ".join(DATASETS))
    p.add_argument("--dir", type=Path, default=None,
                   help=f"the data root to fill (default: ${ENV_VAR}, else ./data: where --dataset looks first)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no lines")
    p.set_defaults(run=_cmd_fetch)
