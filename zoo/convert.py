"""`python -m zoo.convert FORMAT ...`: third-party weights -> one zoo export (`zoo.pretrained.load` reads it).

    python -m zoo.convert stylegan2 --pkl network-snapshot.pkl --out FILE.safetensors [--net G_ema|G|D]

Each format is one `Subcommand`: its arguments and the function that converts (imported only when it
runs), so a new converter (FOMM, ...) is one more entry in `SUBCOMMANDS`. Bad input (a missing file, not
a pickle, a network the zoo's model cannot represent, a crafted pickle) prints one `weights error: ...`
line and exits with status 2; --debug (or ZOO_DEBUG=1) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
from typing import Any, Callable

from zoo.errors import ZooError

BAD_INPUT_STATUS = 2
DEBUG_ENV = "ZOO_DEBUG"


def _stylegan2_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pkl", required=True, help="NVIDIA's network pickle (stylegan2-ada-pytorch or stylegan3)")
    parser.add_argument("--out", required=True, help="the .safetensors file to write")
    parser.add_argument("--net", default="G_ema", choices=("G_ema", "G", "D"),
                        help="which network of the pickle (default G_ema, the one NVIDIA evaluates)")


@dataclasses.dataclass(frozen=True)
class Subcommand:
    """One convertible format: its help line, its arguments, and "module:function" taking the parsed args."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    function: str
    call: Callable[[Callable[..., Any], argparse.Namespace], Any]


SUBCOMMANDS: dict[str, Subcommand] = {
    "stylegan2": Subcommand(
        help="NVIDIA's StyleGAN2 network pickle -> stylegan2_g / stylegan2_d, without running the pickle's code",
        arguments=_stylegan2_arguments,
        function="zoo.stylegan2_convert:convert_stylegan2",
        call=lambda fn, args: fn(args.pkl, args.out, net=args.net),
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zoo.convert", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of a bad-input error")
    commands = parser.add_subparsers(dest="format", required=True)
    for name, sub in SUBCOMMANDS.items():
        sub.arguments(commands.add_parser(name, help=sub.help, description=sub.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, convert, print the written file; a ZooError is one `weights error: ...` line and status 2."""
    args = _parser().parse_args(argv)
    sub = SUBCOMMANDS[args.format]
    module, _, attr = sub.function.partition(":")
    try:
        out = sub.call(getattr(importlib.import_module(module), attr), args)
    except ZooError as error:
        if args.debug or os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false"):
            raise
        print(f"weights error: {error}", file=sys.stderr)
        return BAD_INPUT_STATUS
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
