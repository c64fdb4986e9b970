"""zoo.xla_cpu: the flag is added once, never over the user's, by the entry points only, and XLA accepts it."""
import os
import subprocess
import sys

import jaxlib

from zoo import xla_cpu


def test_adds_the_flag_after_existing_ones():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert xla_cpu.apply(env, "0.10.2")
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {xla_cpu.FLAG}"
    assert not xla_cpu.apply(env, "0.10.2")  # a second import changes nothing
    assert env["XLA_FLAGS"].count("ynn_fusion_type") == 1


def test_keeps_the_users_choice_and_skips_unmeasured_jaxlib_versions():
    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
    assert not xla_cpu.apply(mine, "0.10.2") and mine["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="
    for version in ("0.9.9", "0.11.2", "1.0.0"):
        env: dict[str, str] = {}
        assert not xla_cpu.apply(env, version) and "XLA_FLAGS" not in env


def _run(code: str, xla_flags: str | None = None) -> list[str]:
    """stdout lines of `python -c code` started with XLA_FLAGS unset or set to `xla_flags`."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()


MEASURED = xla_cpu.apply({}, jaxlib.__version__)  # whether this jaxlib gets the flag at all


def test_importing_the_library_leaves_xla_flags_alone():
    """`import zoo` (and every entry module, imported rather than run) edits no environment variable."""
    code = ("import os; before = dict(os.environ); "
            "import zoo, zoo.layers, train.cli, train.__main__, train.evaluate, train.export, benchmarks.common, "
            "benchmarks.__main__, benchmarks.gpu; "
            "print(os.environ.get('XLA_FLAGS', '<unset>')); print(dict(os.environ) == before)")
    assert _run(code)[-2:] == ["<unset>", "True"]
    assert _run(code, "--xla_force_host_platform_device_count=2")[-2:] == [
        "--xla_force_host_platform_device_count=2", "True"]


def test_importing_the_entry_modules_starts_no_backend():
    """Their main blocks set the flag after these imports, so no JAX computation may run at import."""
    code = ("import train.__main__, train.evaluate, train.export, benchmarks.__main__, benchmarks.gpu, "
            "benchmarks.compare_torch; from jax._src import xla_bridge; print(xla_bridge.backends_are_initialized())")
    assert _run(code)[-1] == "False"


def test_entry_point_set_up_sets_the_flag_and_xla_starts_with_it():
    """`train.cli.run` (every `python -m train...` command) sets the flag before main, and XLA accepts it."""
    code = ("import os, sys; sys.argv = ['train']; from train import cli; import jax.numpy as jnp\n"
            "def main(argv):\n"
            "    print(os.environ.get('XLA_FLAGS', ''))\n"
            "    print(float(jnp.sum(jnp.ones((64, 8, 8, 16)), axis=(0, 1, 2))[0]))\n"
            "cli.run(main)")
    flags, total = _run(code)[-2:]
    assert (xla_cpu.FLAG in flags) == MEASURED
    assert float(total) == 64 * 8 * 8


def test_prepare_process_keeps_other_flags():
    code = "import os; from train import cli; cli.prepare_process(); print(os.environ['XLA_FLAGS'])"
    flags = _run(code, "--xla_force_host_platform_device_count=2")[-1]
    assert flags == ("--xla_force_host_platform_device_count=2" + (f" {xla_cpu.FLAG}" if MEASURED else ""))


def test_python_m_benchmarks_and_its_workers_get_the_flag(tmp_path):
    """The benchmark dispatcher sets it in its process; `run_worker` passes it to workers run directly."""
    code = ("import os, sys; sys.argv = ['benchmarks']; from benchmarks.__main__ import main\n"
            "try:\n    main()\nexcept SystemExit:\n    print(os.environ.get('XLA_FLAGS', ''))")
    assert (xla_cpu.FLAG in _run(code)[-1]) == MEASURED
    from benchmarks import common

    probe = ("import json, os, sys; "
             "open(sys.argv[-1], 'w').write(json.dumps({'flags': os.environ.get('XLA_FLAGS', '')}))")
    env, before = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, dict(os.environ)
    flags = common.run_worker([sys.executable, "-c", probe], 60, tmp_path, env=env)["flags"]
    assert flags.startswith(env["XLA_FLAGS"]) and (xla_cpu.FLAG in flags) == MEASURED
    assert dict(os.environ) == before  # the caller's own environment is untouched
