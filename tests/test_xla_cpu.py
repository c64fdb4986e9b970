"""zoo.xla_cpu: the YNNPACK-reductions-only flag is added once, never over the user's, and XLA accepts it."""
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


def test_importing_zoo_sets_the_flag_and_xla_starts_with_it():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = ("import os, zoo, jax, jax.numpy as jnp; "
            "print(os.environ['XLA_FLAGS']); print(float(jnp.sum(jnp.ones((64, 8, 8, 16)), axis=(0, 1, 2))[0]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    flags, total = out.stdout.strip().splitlines()[-2:]
    assert (xla_cpu.FLAG in flags) == xla_cpu.apply({}, jaxlib.__version__)  # set wherever this jaxlib is measured
    assert float(total) == 64 * 8 * 8
