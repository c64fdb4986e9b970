"""What every benchmark reports beside its figures, and how it writes them."""
from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess
import tempfile
from typing import Any, Callable

import jax

from zoo import files, xla_cpu


def machine() -> dict[str, Any]:
    """The context a figure needs to be read: CPU, backend, devices, versions, load."""
    return {"platform": platform.platform(), "cpu": cpu(), "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(), "jax": jax.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "load_avg_1m": round(os.getloadavg()[0], 2)}


def cpu() -> dict[str, Any]:
    """The CPU's model name and the vector extensions that decide conv and GEMM speed (Linux only).

    Machines lent to this project differ from session to session, so every figure says which it had.
    """
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {"model": platform.processor()}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
    return {"model": fields.get("model name", ""), "vector": sorted(flags & set(wanted))}


def entry(main: Callable[[], None]) -> None:
    """Run a benchmark's main() as `python -m benchmarks.<name>`: with the XLA:CPU flag `python -m benchmarks <name>`
    sets (`zoo.xla_cpu.apply()`), so both ways of starting a benchmark measure the same program."""
    from zoo import xla_cpu

    xla_cpu.apply()
    main()


def emit(results: dict[str, Any], path: str | None) -> None:
    """Print the results as JSON and, if a path is given, write the same text there (atomically: old file or new)."""
    text = json.dumps(results, indent=2)
    print(text)
    if path:
        with files.atomic_write(path) as tmp:
            tmp.write_text(text + "\n")


def run_worker(command: list[str], timeout: float, cwd: pathlib.Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """A benchmark worker's JSON result (it is given `--json PATH`), or {"error": ...} with why it gave none.

    Each measured setting runs in a fresh process, so its memory figures and warm-up are its own. Its
    environment is ours plus `env`, with the XLA:CPU flag of `zoo.xla_cpu` unless XLA_FLAGS chooses.
    """
    worker_env = {**os.environ, **(env or {})}
    xla_cpu.apply(worker_env)
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "result.json"
        try:
            proc = subprocess.run([*command, "--json", str(out)], cwd=cwd, capture_output=True, text=True,
                                  timeout=timeout, env=worker_env)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if out.is_file():
            return json.loads(out.read_text())
        return {"error": f"exit {proc.returncode}: {proc.stderr[-3000:]}"}
