"""`python -m data list|info <spec>`: what data specs exist and which datasets this machine has."""
from __future__ import annotations

import argparse
import sys

from data.sources import SPLITS, get_source, list_sources, local_datasets


def main(argv: list[str] | None = None) -> int:
    """Print spec forms and local datasets (list) or one source's info (info), so users find data quickly."""
    parser = argparse.ArgumentParser(prog="python -m data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="spec forms and the datasets found on this machine")
    info = commands.add_parser("info", help="load one source and print its info")
    info.add_argument("spec")
    info.add_argument("--split", default="train", help=f"{', '.join(SPLITS)}, or a TFDS split")
    info.add_argument("--data_dir", default=None, help="TFDS data directory")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("Data specs (get_source(spec, split)):")
        for form, text in list_sources().items():
            print(f"  {form:<22} {text}")
        print("Found on this machine:")
        for spec in local_datasets():
            print(f"  {spec}")
        return 0
    try:
        source = get_source(args.spec, args.split, data_dir=args.data_dir)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(source.info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
