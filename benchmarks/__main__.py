"""`python -m benchmarks <name> [args]`: runs benchmarks/<name>.py's main() on the remaining arguments.

Every module of this package with a main() is a benchmark except the helpers in `_LIBRARIES`;
`python -m benchmarks` alone lists them, `python -m benchmarks <name> --help` shows one's options.
It sets the XLA:CPU flag (`zoo.xla_cpu.apply()`) before any benchmark starts JAX; the workers a
benchmark starts get it through `benchmarks.common.run_worker`.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys

import benchmarks
from zoo import xla_cpu

_LIBRARIES = ("common", "torch_twins", "twin_specs")


def names() -> list[str]:
    """The benchmarks runnable by name, found from the package's modules (none is imported)."""
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__)
                  if not m.name.startswith("_") and m.name not in _LIBRARIES)


def main() -> None:
    """Dispatches to the named benchmark, or prints usage and exits 2."""
    xla_cpu.apply()
    known = names()
    usage = f"usage: python -m benchmarks <name> [--json out.json] [options]\nbenchmarks: {', '.join(known)}"
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(usage, file=sys.stderr)
        sys.exit(0 if len(sys.argv) > 1 else 2)
    if sys.argv[1] not in known:
        print(f"unknown benchmark {sys.argv[1]!r}; {usage}", file=sys.stderr)
        sys.exit(2)
    name = sys.argv[1]
    sys.argv = [f"python -m benchmarks {name}", *sys.argv[2:]]
    importlib.import_module(f"benchmarks.{name}").main()


if __name__ == "__main__":
    main()
