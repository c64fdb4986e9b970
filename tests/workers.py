"""Subprocess entry points for tests that need a fresh process: kills, device counts, multi-host.

    python tests/workers.py DEVICES COMMAND ARGS...

DEVICES (the simulated CPU device count) must be fixed before JAX is imported, hence a process.
"""
import json
import os
import sys

os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={sys.argv[1]}"
os.environ["JAX_PLATFORMS"] = "cpu"

from zoo import xla_cpu  # noqa: E402

xla_cpu.apply()

import logging  # noqa: E402
import pathlib  # noqa: E402

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()
logging.basicConfig(level=logging.INFO)
ROOT = pathlib.Path(__file__).resolve().parents[1]


def config_from(overrides_json: str):
    import ml_collections

    from train import config as config_lib

    spec = json.loads(overrides_json)
    config = config_lib.load(str(ROOT / spec.pop("_config", "configs/vae_digits.py:smoke")))
    config.unlock()
    for dotted, value in spec.items():
        node = config
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = tuple(value) if isinstance(value, list) else value
    assert isinstance(config, ml_collections.ConfigDict)
    return config


def save_params(state, out: str) -> None:
    from flax import traverse_util

    flat = traverse_util.flatten_dict(state["params"], sep="/")
    np.savez(out, **{k: np.asarray(v) for k, v in flat.items()})


def train(overrides_json: str, workdir: str, out: str, kill_at: str = "0", wait_for: str = "0") -> None:
    """Train; with kill_at=K, SIGKILL this process after step K, once checkpoint `wait_for` is on disk.

    The wait makes the test deterministic: the async save of step `wait_for` has finalised, while
    anything saved after it may be half-written when the kill lands.
    """
    import signal
    import time

    from train import trainer

    hooks = []
    if int(kill_at):
        def hook(step: int) -> None:
            if step == int(kill_at):
                finalised = pathlib.Path(workdir) / "checkpoints" / wait_for
                deadline = time.time() + 120
                while not finalised.is_dir() and time.time() < deadline:
                    time.sleep(0.01)
                os.kill(os.getpid(), signal.SIGKILL)
        hooks.append(hook)
    state = trainer.train(config_from(overrides_json), workdir, hooks=hooks)
    save_params(state, out)


def restore(workdir: str, out: str) -> None:
    """Restore the newest checkpoint of workdir onto this process's devices and save its params."""
    import jax

    from train import runs

    _, step, state = runs.load_run(workdir)
    leaf = jax.tree.leaves(state["params"])[0]
    assert len(leaf.sharding.device_set) == jax.device_count(), leaf.sharding
    save_params(state, out)
    print(json.dumps({"devices": jax.device_count(), "step": step}))


def multihost(port: str, process_id: str, overrides_json: str, workdir: str, out: str) -> None:
    """One of two processes on loopback, gloo collectives, each feeding its own half of every batch."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id))
    from train import trainer

    state = trainer.train(config_from(overrides_json), workdir)
    if jax.process_index() == 0:
        save_params(jax.tree.map(lambda x: np.asarray(jax.device_get(x)), state), out)


if __name__ == "__main__":
    {"train": train, "restore": restore, "multihost": multihost}[sys.argv[2]](*sys.argv[3:])
