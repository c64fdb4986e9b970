"""Shared set-up for the command-line entry points (train, evaluate, export; the argparse verbs).

`run` is absl's `app.run` with bad input reported as a message: any `ZooError` prints one or two
lines and exits with status 2, and a traceback appears only with `--debug` or `ZOO_DEBUG=1`.
`argparse_main` is the same for the verbs built on argparse (animate, merge, generate, reenact_grid).
It first calls `prepare_process`, so every command built on it sets the XLA:CPU flag before JAX
starts, while importing the library (this module included) leaves the environment alone.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import pathlib
import sys
from typing import Any, Callable, NoReturn, Sequence, TypeVar

from absl import app, flags
from absl import logging as absl_logging

from zoo import errors, xla_cpu

DEBUG_ENV = "ZOO_DEBUG"
BAD_INPUT_STATUS = 2

_LABELS = {
    errors.ConfigError: "config error",
    errors.DataError: "data error",
    errors.WeightsError: "weights error",
    errors.CheckpointError: "checkpoint error",
    errors.WorkdirError: "workdir error",
}

T = TypeVar("T")


def setup_logging() -> None:
    """Our INFO messages (resume, fallbacks) on stderr; the libraries' INFO chatter (orbax) off."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    for name in ("train", "data", "zoo"):
        logging.getLogger(name).setLevel(logging.INFO)


def prepare_process() -> None:
    """Process-wide set-up of an entry point, before any JAX computation: the XLA:CPU flag (`zoo.xla_cpu`)."""
    xla_cpu.apply()


def run(main: Callable[[list[str]], Any], flags_parser: Callable[[list[str]], Any] | None = None) -> None:
    """`prepare_process`, then `app.run(main)` with a ZooError from parsing or main as its message and status 2."""
    prepare_process()
    if "debug" not in flags.FLAGS:
        flags.DEFINE_bool("debug", False, f"Show the traceback of a bad-input error (or set {DEBUG_ENV}=1).")
    app.run(guarded(main), flags_parser=guarded(flags_parser or app.parse_flags_with_usage))


def guarded(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` with a ZooError reported by `fail`, unless debugging asks for the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except errors.ZooError as error:
            if debugging():
                raise
            fail(error)

    return wrapper


def add_debug_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--debug` on an argparse verb: the traceback of a bad-input error instead of its one line."""
    parser.add_argument("--debug", action="store_true", help=f"show the traceback of a bad-input error (or {DEBUG_ENV}=1)")
    return parser


def argparse_main(parser: Callable[[], argparse.ArgumentParser], body: Callable[[argparse.Namespace], str]
                  ) -> Callable[[Sequence[str] | None], int]:
    """An argparse verb's `main(argv)`: parse, set up logging, run `body` guarded and print the line it returns.

    A ZooError from `body` ends in one line on stderr and exit status 2 (`guarded`; the parser takes
    `--debug` from `add_debug_flag` for the traceback instead). `body` finds the
    arguments as given (sys.argv[1:] when argv is None) in `args.argv`, for the records it writes.
    """

    def main(argv: Sequence[str] | None = None) -> int:
        args = parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        setup_logging()
        print(guarded(body)(args), flush=True)
        return 0

    return main


def debugging(argv: Sequence[str] | None = None) -> bool:
    """Whether `--debug` is on the command line or ZOO_DEBUG is set: read raw, as parsing itself may have failed."""
    args = sys.argv if argv is None else argv
    flag = any(a == "--debug" or a.lower() in ("--debug=true", "--debug=1") for a in args)
    return flag or os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false")


def fail(error: errors.ZooError | str) -> NoReturn:
    """Print `<kind> error: <message>` on stderr and exit with status 2, the status for bad input."""
    label = next((_LABELS[t] for t in type(error).__mro__ if t in _LABELS), "error")
    print(f"{label}: {error}", file=sys.stderr)
    sys.exit(BAD_INPUT_STATUS)


def run_flags() -> flags.FlagValues:
    """The parsed flags of a CLI that reads a run (`--workdir` required), with logging set up."""
    setup_logging()
    if not flags.FLAGS.workdir:
        fail("--workdir is required (the directory `python -m train` wrote)")
    return flags.FLAGS


def check_run_dir(workdir: str | pathlib.Path) -> None:
    """Raise WorkdirError unless `workdir` holds a run (its config.json), so a typo never reaches a library."""
    workdir = pathlib.Path(workdir)
    fix = "pass the --workdir that `python -m train` wrote"
    if not workdir.exists():
        raise errors.WorkdirError(f"workdir {workdir} does not exist; {fix}")
    if not workdir.is_dir():
        raise errors.WorkdirError(f"workdir {workdir} is a file, not a directory; {fix}")
    if not (workdir / "config.json").is_file():
        raise errors.WorkdirError(f"workdir {workdir} holds no run (no config.json); {fix}, or train there first")


def check_writable(directory: str | pathlib.Path, fix: str) -> None:
    """Raise WorkdirError unless `directory` is, or can be made, a writable directory: fail before any work."""
    path = pathlib.Path(directory).absolute()
    existing = next(p for p in (path, *path.parents) if os.path.exists(p))
    if not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise errors.WorkdirError(f"{path} {where}, not a directory; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise errors.WorkdirError(f"{existing} is not writable (read-only); make it writable or {fix}")
