"""A run's set-up: a config built into family, data and state layout, and a workdir read back.

What training, evaluation, export and the benchmarks share, so none of them imports another:
`build` (config -> Setup), `load_config` (a workdir's frozen config), `load_run` (a workdir's
setup, step and restored state), `load_export` (the same from an export file and the config it was
trained with) and `train_dataset` (the input pipeline a run trains on).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from data import pairs, pipeline, sources, transforms
from train import checkpoint, evaluators, families, parallel
from train import config as config_lib
from train.families.base import Family
from zoo.errors import CheckpointError, ConfigError, WeightsError, WorkdirError


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
    train_source = training_source(config)
    eval_source, eval_spec = evaluation_source(config)
    family = family_module.make(config, train_source.info.image_shape)
    evaluators.metric_names(family, config.eval.metrics)  # a misspelt metric fails now, not after training
    runner = parallel.Runner.create(config.parallel.strategy, config.parallel.num_devices)
    root_key = jax.random.key(config.seed)
    init_args = (jax.random.fold_in(root_key, 0x696E6974), evaluators.preview_batch(train_source, 1))
    abstract = jax.eval_shape(family.init, *init_args)
    shardings = runner.state_shardings(abstract)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return Setup(config, family, train_source, eval_source, eval_spec, runner, abstract, root_key, init_args)


def training_source(config: ml_collections.ConfigDict) -> Any:
    """The config's training source on data.train_split, paired for two identities."""
    d = config.data
    source = _source(d.source, d.train_split, d.resolution)
    if d.source_b:
        source = pairs.PairedSource(source, _source(d.source_b, d.train_split, d.resolution))
    return source


def evaluation_source(config: ml_collections.ConfigDict, split: str | None = None) -> tuple[Any, str]:
    """The config's evaluation source on `split` (default data.eval_split), paired for two identities, and its spec."""
    d = config.data
    split = split or d.eval_split
    spec = d.eval_source or d.source
    source = _source(spec, split, d.resolution)
    if d.source_b:
        spec_b = d.eval_source_b or d.source_b
        source = pairs.PairedSource(source, _source(spec_b, split, d.resolution))
        spec = f"{spec}|{spec_b}"
    return source, f"{spec}:{split}"


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


def load_run(workdir: str | pathlib.Path, step: int | None = None, *, family: str | None = None
             ) -> tuple[Setup, int, Any]:
    """A finished or running workdir's setup, checkpoint step (newest by default) and state.

    `family`, where a tool reads one family's runs, is checked against the run's before anything is built.
    """
    from train import cli

    workdir = pathlib.Path(workdir)
    cli.check_run_dir(workdir)
    no_checkpoint = f"no complete checkpoint in {workdir / 'checkpoints'}; train until the first one is saved"
    if not (workdir / "checkpoints").is_dir():
        raise CheckpointError(no_checkpoint)
    config = load_config(workdir)
    if family is not None and config.family != family:
        raise ConfigError(f"{workdir} is a {config.family!r} run; give a {family} run's workdir")
    setup = build(config)
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


ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Exported:
    """An export file read back as a run: its setup and state, the config spec used and the file's sha256."""

    setup: Setup
    state: Any
    config_spec: str
    sha256: str
    path: pathlib.Path


def load_export(export: str | pathlib.Path, config_spec: str | None = None) -> Exported:
    """An export (a file, or a catalogue name) as a run's setup and state, for verbs that need the family.

    An export holds the model, not the data it learnt from, so the config comes from `config_spec`
    (configs/<file>.py[:variant]) or, for a catalogue checkpoint, from its card; the model section is
    then the export's own. The state is an inference state (`_inference_state`), the run built on one
    device so that the training batch sizes need not divide this machine's devices.
    """
    from zoo import catalogue, pretrained

    loaded = pretrained.load(export)
    path = pathlib.Path(export) if pathlib.Path(export).is_file() else pretrained.entry_path(
        str(export), catalogue.REGISTRY[str(export)])
    digest = pretrained.sha256(path)
    spec = config_spec or _catalogue_config(digest, path)
    file, colon, variant = spec.partition(":")
    if not pathlib.Path(file).is_file() and (ROOT / file).is_file():
        file = str(ROOT / file)  # a card's config, named from the repository root
    if not pathlib.Path(file).is_file():
        raise ConfigError(f"config file {file} not found; pass --config configs/<file>.py[:variant], the config "
                          f"{path} was trained with")
    config = config_lib.load(file + colon + variant)
    family = loaded.config["metadata"].get("family")
    if family and family != config.family:
        raise ConfigError(f"{path} is a {family!r} model but the config {spec} is for family {config.family!r}; "
                          "pass the config it was trained with")
    fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in loaded.config["model_config"].items()
              if k != "image_shape"}
    config.model = config_lib.model_section(loaded.config["model"], **fields)
    config.parallel.num_devices = 1
    setup = build(config)
    state = _inference_state(setup.abstract_state, loaded, path)
    return Exported(setup, state, spec, digest, path)


def _catalogue_config(digest: str, path: pathlib.Path) -> str:
    """The config of the catalogue checkpoint whose sha256 is `digest`, or the error asking for --config."""
    from zoo import catalogue

    for entry in catalogue.REGISTRY.values():
        if entry.sha256 == digest and entry.card is not None:
            return entry.card.config
    raise ConfigError(f"{path} is not a catalogue checkpoint, so the data it learnt from are unknown: pass "
                      "--config configs/<file>.py[:variant], the config it was trained with")


def _inference_state(abstract: Any, loaded: Any, path: pathlib.Path) -> Any:
    """The state an export stands for: its params as the network whose shapes they have, and as that network's
    EMA where the family keeps one, with its inference collections; other networks (discriminators) are absent.

    Nothing is initialised or compiled: what the family's evaluation reads of the state is all an export holds.
    """
    shapes = jax.tree.map(np.shape, loaded.params)
    nets = [n for n, p in abstract["params"].items()
            if jax.tree.structure(p) == jax.tree.structure(loaded.params) and jax.tree.map(np.shape, p) == shapes]
    if not nets:
        raise WeightsError(f"{path}: its params fit no network of the family built from the config ("
                           f"{', '.join(abstract['params'])}); pass the config the model was trained with")
    net = nets[0]
    state = {"step": np.int32(0), "params": {net: loaded.params}}
    if net in abstract.get("ema", {}):
        state["ema"] = {net: loaded.params}
    if loaded.collections:
        state["collections"] = {net: dict(loaded.collections)}
    return state


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
