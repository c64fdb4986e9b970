"""The XLA:CPU setting the zoo's training steps are fastest with, put in XLA_FLAGS before JAX starts.

jaxlib 0.10 hands convolutions, dots, element-wise ops and reductions to YNNPACK. On the zoo's
conv nets YNNPACK's convolutions are slower than XLA's own: the weight gradient of a 3x3 conv on
a 32x32 map ran at ~25 GFLOP/s against ~105, and a map smaller than the kernel at ~6. Its
reductions, though, are 30x faster than XLA's (a batch-norm sum over [128, 16, 16, 128]: 0.5 ms
against 14 ms). Handing YNNPACK the reductions alone made the default steps faster on a 2-core
Xeon with AVX-512 (`python -m benchmarks compare_torch`): DF-64 405 -> 292 ms, DCGAN-64 2.68 ->
1.64 s, conv VAE 1.06 -> 0.68 s; with nothing for YNNPACK the batch-norm steps lose it all again.

Importing the zoo never edits the environment: the entry points call `apply()` (`python -m train`,
`train.evaluate`, `train.export` and the other `train.cli.run` commands, `python -m benchmarks` and
the benchmark workers it starts). In your own script, call it before the first JAX computation:

    from zoo import xla_cpu
    xla_cpu.apply()  # then build and run models as usual

Set `--xla_cpu_experimental_ynn_fusion_type=...` in XLA_FLAGS yourself to choose otherwise; `apply`
then leaves it alone. It only takes effect if no JAX computation ran before it, and only for the
jaxlib versions it was measured on (an unknown flag would stop XLA from starting).
"""
from __future__ import annotations

import os
from typing import MutableMapping

import jaxlib

FLAG = "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE"
MEASURED_JAXLIB = ((0, 10), (0, 10))  # first and last jaxlib minor version measured with the flag


def apply(environ: MutableMapping[str, str] = os.environ, jaxlib_version: str = jaxlib.__version__) -> bool:
    """Adds FLAG to environ["XLA_FLAGS"] unless a YNNPACK fusion type is set there; True if it did.

    Call it before JAX's first computation (XLA reads the flags when its CPU backend starts).
    """
    version = tuple(int(p) for p in jaxlib_version.split(".")[:2])
    if not MEASURED_JAXLIB[0] <= version <= MEASURED_JAXLIB[1]:
        return False
    flags = environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return False
    environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    return True
