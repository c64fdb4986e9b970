"""A run's set-up: a config built into family, data and state layout, and a workdir read back.

What training, evaluation, export and the benchmarks share, so none of them imports another:
`build` (config -> Setup), `load_config` (a workdir's frozen config), `load_run` (a workdir's
setup, step and restored state) and `train_dataset` (the input pipeline a run trains on).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import ml_collections

from data import pairs, pipeline, sources, transforms
from train import checkpoint, evaluators, families, parallel
from train import config as config_lib
from train.families.base import Family
from zoo.errors import CheckpointError, WorkdirError


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything derived from a config before any device work: what train and evaluate share."""

    config: ml_collections.ConfigDict
    family: Family
    train_source: Any
    eval_source: Any
    eval_spec: str
    runner: parallel.Runner
    abstract_state: Any
    root_key: jax.Array
    init_args: tuple[jax.Array, Any]


def build(config: ml_collections.ConfigDict) -> Setup:
    """Validate the config and construct family, sources and the (abstract) state layout."""
    family_module = families.get(config.family)
    config_lib.validate(config, family_module.section())
    d = config.data
    eval_spec = d.eval_source or d.source
    train_source = _source(d.source, d.train_split, d.resolution)
    eval_source = _source(eval_spec, d.eval_split, d.resolution)
    if d.source_b:
        eval_spec_b = d.eval_source_b or d.source_b
        train_source = pairs.PairedSource(train_source, _source(d.source_b, d.train_split, d.resolution))
        eval_source = pairs.PairedSource(eval_source, _source(eval_spec_b, d.eval_split, d.resolution))
        eval_spec = f"{eval_spec}|{eval_spec_b}"
    family = family_module.make(config, train_source.info.image_shape)
    runner = parallel.Runner.create(config.parallel.strategy, config.parallel.num_devices)
    root_key = jax.random.key(config.seed)
    init_args = (jax.random.fold_in(root_key, 0x696E6974), evaluators.preview_batch(train_source, 1))
    abstract = jax.eval_shape(family.init, *init_args)
    shardings = runner.state_shardings(abstract)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return Setup(config, family, train_source, eval_source, f"{eval_spec}:{config.data.eval_split}", runner,
                 abstract, root_key, init_args)


def _source(spec: str, split: str, resolution: int) -> Any:
    """The named source, viewed at `resolution` when it is set."""
    source = sources.get_source(spec, split)
    return transforms.Resized(source, resolution) if resolution else source


_RESTORE_CONFIG = ('restore it from a copy; each checkpoint keeps one, the "config" field of '
                   "checkpoints/<step>/meta/metadata")


def load_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
    """The frozen config a run wrote at start-up, over today's defaults.

    Fields added to the base config after the run was started take their defaults, so a workdir
    written by an older version still evaluates, exports and resumes.
    """
    path = workdir / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir} a training workdir (python -m train --workdir ...)?")
    try:
        frozen = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WorkdirError(f"{path} is not the JSON config a run writes ({error}); {_RESTORE_CONFIG}") from error
    if not isinstance(frozen, dict):
        raise WorkdirError(f"{path} holds a JSON {type(frozen).__name__}, not the config object a run writes; "
                           f"{_RESTORE_CONFIG}")
    config = config_lib.base_config()
    if frozen.get("family") in families.FAMILIES:
        config[frozen["family"]] = families.get(frozen["family"]).section()
    return config_lib.merge(config, frozen)


def load_run(workdir: str | pathlib.Path, step: int | None = None) -> tuple[Setup, int, Any]:
    """A finished or running workdir's setup, checkpoint step (newest by default) and state."""
    from train import cli

    workdir = pathlib.Path(workdir)
    cli.check_run_dir(workdir)
    no_checkpoint = f"no complete checkpoint in {workdir / 'checkpoints'}; train until the first one is saved"
    if not (workdir / "checkpoints").is_dir():
        raise CheckpointError(no_checkpoint)
    setup = build(load_config(workdir))
    checkpointer = checkpoint.Checkpointer(workdir)
    steps = checkpointer.steps()
    if not steps or (step is not None and step not in steps):
        checkpointer.close()
        raise CheckpointError(no_checkpoint if not steps else
                              f"no checkpoint for step {step} in {workdir}; pass --step as one of {steps}")
    step = steps[-1] if step is None else step
    state = checkpointer.restore(step, setup.abstract_state).state
    checkpointer.close()
    return setup, step, state


def train_dataset(setup: Setup, start: int = 0) -> Any:
    """This process's endless training batches from batch `start`: {"a", "b"} pairs for two sources."""
    config, source = setup.config, setup.train_source
    common = dict(global_batch_size=config.batch_size, seed=config.seed, process_index=jax.process_index(),
                  process_count=jax.process_count(), worker_count=config.data.worker_count, start=start)
    make_transforms = setup.family.train_transforms
    if isinstance(source, pairs.PairedSource):
        ta, tb = make_transforms(source.a, source.b) if make_transforms else (None, None)
        return pipeline.make_pair_dataset(source.a, source.b, transform=ta, transform_b=tb, **common)
    transform = make_transforms(source, None)[0] if make_transforms else None
    return pipeline.make_dataset(source, transform=transform, **common)
