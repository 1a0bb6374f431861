"""`python -m nasloop.data`: list the registered datasets, or download one's official files.

python -m nasloop.data list
python -m nasloop.data download cifar10 [--root DIR] [--mirror URL_OR_DIR]
"""

from __future__ import annotations

import argparse
import sys

from nasloop.data.errors import DatasetError
from nasloop.data.splits import get_source
from nasloop.registry import datasets


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m nasloop.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="registered datasets and where their files are expected")
    fetch = commands.add_parser("download", help="download a dataset's official files (checksums verified)")
    fetch.add_argument("name", help="a registered dataset name")
    fetch.add_argument("--root", help="directory to download into (default: the dataset's default root)")
    fetch.add_argument("--mirror", help="base URL or local directory holding the files, instead of the official site")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name in datasets.names():
            source = get_source(name)
            roots = ", ".join(str(root) for root in source.default_roots())
            print(f"{name:<15} {(source.__doc__ or '').splitlines()[0]}  [{roots}]")
        return 0
    try:
        root = get_source(args.name).fetch(args.root, mirror=args.mirror)
    except (DatasetError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.name}: files in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
