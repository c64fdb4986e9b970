"""One process of a 2-process loopback training run, for the fault benchmark's multi-host trials.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m benchmarks._fault_worker \
        --port PORT --process_id 0|1 --config configs/vae_digits.py:smoke --workdir W [--config.field=value]

`python -m train --config.parallel.multihost=True` finds the coordinator and process ids in a
cluster's environment (SLURM, Open MPI, TPU), which a loopback run on one machine does not have;
this entry point passes them explicitly and uses gloo for the CPU collectives, then trains exactly
as `python -m train` does.
"""
from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from train import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file, optionally :variant.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (resumed if it exists).")
_PORT = flags.DEFINE_integer("port", None, "Coordinator port on 127.0.0.1.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 or 1.")


def main(argv: list[str]) -> None:
    """Join the 2-process run on loopback, then train its config in its workdir."""
    del argv
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # A peer that crashed leaves the other waiting at the shutdown barrier; 2 min, not 5, before it gives up.
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{_PORT.value}", num_processes=2,
                               process_id=_PROCESS_ID.value, shutdown_timeout_seconds=120)
    from train import trainer

    cli.setup_logging()
    trainer.train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
