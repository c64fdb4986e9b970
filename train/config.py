"""The experiment config: the base every config file extends, and start-up validation.

Config files in `configs/` build on `base_config()` and return a ConfigDict; the trainer calls
`validate` before touching data or devices, so a misspelt field, a wrong type or an impossible
value fails in the first second with the field named and the valid choices listed.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Iterable

import jax
import ml_collections

from zoo.errors import ConfigError  # noqa: F401  (re-exported: configs and the CLIs raise it from here)

STRATEGIES = ("jit", "pmap")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "adabelief", "sgd")
SCHEDULES = ("constant", "cosine")
DTYPES = ("float32", "bfloat16", "float16")


def base_config() -> ml_collections.ConfigDict:
    """Every field the trainer reads, with defaults. Config files override; nothing else is allowed."""
    c = ml_collections.ConfigDict()
    c.family = "vae"
    c.seed = 0
    c.batch_size = 128
    c.total_steps = 1000

    c.model = ml_collections.ConfigDict()
    c.model.name = "vae_conv"
    c.model.dtype = "float32"

    c.data = ml_collections.ConfigDict()
    c.data.source = "digits"
    c.data.train_split = "train"
    c.data.source_b = ""
    c.data.eval_source = ""
    c.data.eval_source_b = ""
    c.data.eval_split = "test"
    c.data.worker_count = 0
    c.data.resolution = 0

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.weight_decay = 0.0
    c.optim.grad_clip_norm = 0.0
    c.optim.update_keep_prob = 1.0
    c.optim.skip_nonfinite = False  # keep the old state when an update makes it non-finite, instead of stopping

    c.parallel = ml_collections.ConfigDict()
    c.parallel.strategy = "jit"
    c.parallel.multihost = False
    c.parallel.num_devices = 0

    c.log_every = 50
    c.preview_every = 500
    c.eval_every = 0

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 500
    c.checkpoint.max_to_keep = 3
    c.checkpoint.keep_every = 0

    c.eval = ml_collections.ConfigDict()
    c.eval.metrics = ()
    c.eval.batch_size = 250
    c.eval.num_examples = 0
    return c


def validate(config: ml_collections.ConfigDict, family_defaults: ml_collections.ConfigDict | None = None) -> None:
    """Raise ConfigError naming the first bad field; `family_defaults` is the family's own section."""
    from zoo import registry

    reference = base_config()
    if family_defaults is not None:
        reference[config.family] = family_defaults
    _check_known_fields(config, reference, "")

    _choice("parallel.strategy", config.parallel.strategy, STRATEGIES)
    _choice("optim.name", config.optim.name, OPTIMIZERS)
    _choice("optim.schedule", config.optim.schedule, SCHEDULES)
    _choice("model.dtype", config.model.dtype, DTYPES)
    _choice("model.name", config.model.name, registry.list_models())
    _check_model_fields(config.model)
    for field in ("batch_size", "total_steps", "eval.batch_size"):
        _positive(field, _get(config, field))
    for field in ("log_every", "preview_every", "eval_every", "checkpoint.every", "checkpoint.keep_every",
                  "checkpoint.max_to_keep", "data.worker_count", "data.resolution", "parallel.num_devices", "optim.warmup_steps", "eval.num_examples"):
        if _get(config, field) < 0:
            raise ConfigError(f"{field} = {_get(config, field)} must be >= 0 (0 switches it off)")
    if config.optim.warmup_steps >= config.total_steps:
        raise ConfigError(
            f"optim.warmup_steps = {config.optim.warmup_steps} must be below total_steps = {config.total_steps}"
        )
    if config.optim.learning_rate <= 0:
        raise ConfigError(f"optim.learning_rate = {config.optim.learning_rate} must be > 0")
    if not 0.0 < config.optim.update_keep_prob <= 1.0:
        raise ConfigError(
            f"optim.update_keep_prob = {config.optim.update_keep_prob} must be in (0, 1]; "
            "1.0 switches update dropout off, DeepFaceLab's lr_dropout uses 0.3"
        )

    devices, processes = config.parallel.num_devices or jax.device_count(), jax.process_count()
    if devices > jax.device_count():
        raise ConfigError(f"parallel.num_devices = {devices} but only {jax.device_count()} devices exist; use 0 for all")
    if config.batch_size % devices:
        raise ConfigError(
            f"batch_size = {config.batch_size} is not divisible by the {devices} devices; "
            f"use a multiple of {devices}, e.g. --config.batch_size={max(devices, config.batch_size // devices * devices)}"
        )
    if config.batch_size % processes:
        raise ConfigError(f"batch_size = {config.batch_size} is not divisible by the {processes} processes")
    if config.eval.batch_size % devices:
        raise ConfigError(f"eval.batch_size = {config.eval.batch_size} is not divisible by the {devices} devices")


def model_section(name: str, **fields: Any) -> ml_collections.ConfigDict:
    """A `config.model` holding every constructor field of registered model `name`, defaults filled in.

    Listing all fields makes each one overridable from the command line and recorded in the
    frozen config; `image_shape` comes from the data and `param_dtype` stays float32.
    """
    from zoo import registry

    cls_fields = {f.name: f for f in dataclasses.fields(registry.model_class(name))}
    section = ml_collections.ConfigDict({"name": name})
    for key, field in cls_fields.items():
        if key in ("parent", "name", "image_shape", "param_dtype"):
            continue
        default = field.default
        if key == "dtype":
            default = "float32"
        section[key] = tuple(default) if isinstance(default, list) else default
    for key, value in fields.items():
        if key not in section:
            raise ConfigError(_unknown(f"model.{key}", key, section.keys(), what=f"field of model {name!r}"))
        section[key] = value
    return section


def changed_fields(old: dict, new: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted field, old value, new value) for every field two JSON-form configs disagree on."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            changes += changed_fields(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append((f"{prefix}{key}", a, b))
    return changes


def defines_state(field: str, config: dict) -> bool:
    """Whether a change of `field` changes what a checkpointed state means, even at equal shapes.

    The family, every model section's fields (compute dtype included) and the optimiser's kind;
    any other change (steps, intervals, learning rate, data, evaluation) leaves a state resumable.
    """
    if field in ("family", "optim.name"):
        return True
    parts = field.split(".")
    section: Any = config
    for part in parts[:-1]:
        if is_model_section(section):
            return True
        section = section.get(part, {}) if isinstance(section, dict) else {}
    return is_model_section(section)


def model_kwargs(model_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The model section as constructor arguments (without `name`; lists become tuples)."""
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in model_config.to_dict().items() if k != "name"}
    return kw


def _check_known_fields(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict, prefix: str) -> None:
    for key, value in config.items():
        path = f"{prefix}{key}"
        if key == "model" and not prefix:
            continue
        if key not in reference:
            raise ConfigError(_unknown(path, key, reference.keys()))
        expected = reference[key]
        if is_model_section(expected):
            _check_model_fields(value, path)
            continue
        if isinstance(expected, ml_collections.ConfigDict):
            if not isinstance(value, ml_collections.ConfigDict):
                raise ConfigError(f"{path} must be a section with fields {sorted(expected.keys())}, got {value!r}")
            _check_known_fields(value, expected, path + ".")
        elif not _same_kind(value, expected):
            raise ConfigError(f"{path} = {value!r} has type {type(value).__name__}; expected {type(expected).__name__}")


def is_model_section(section: Any) -> bool:
    """True for a section made by `model_section`: its `name` is a registered model.

    Such sections (`config.model`, a family's second network like `gan.discriminator`) are
    validated against the named model's fields and replaced whole when a frozen config is merged.
    """
    from zoo import registry

    return (isinstance(section, (ml_collections.ConfigDict, dict)) and isinstance(section.get("name"), str)
            and section["name"] in registry.list_models())


def _check_model_fields(model: ml_collections.ConfigDict, path: str = "model") -> None:
    from zoo import registry

    if not isinstance(model, ml_collections.ConfigDict) or "name" not in model:
        raise ConfigError(f"{path} must be a model section (config.model_section(name, ...)), got {model!r}")
    _choice(f"{path}.name", model.name, registry.list_models())
    fields = set(registry.model_fields(model.name)) - {"image_shape"}
    for key in model.keys():
        if key != "name" and key not in fields:
            raise ConfigError(_unknown(f"{path}.{key}", key, sorted(fields | {"name"}), what=f"field of model {model.name!r}"))


def _unknown(path: str, key: str, valid: Iterable[str], what: str = "config field") -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {path!r}.{hint} Valid fields here: {', '.join(valid)}"


def _choice(field: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{field} = {value!r} is not valid.{hint} Choose one of: {', '.join(choices)}")


def _positive(field: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{field} = {value} must be > 0")


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config[part]
    return config


def _same_kind(value: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(value, bool) == isinstance(expected, bool)
    if isinstance(expected, float):
        return isinstance(value, (int, float))
    if isinstance(expected, (tuple, list)):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(expected))


def apply_variant(config: ml_collections.ConfigDict, arg: str | None, variants: dict) -> ml_collections.ConfigDict:
    """Apply the named variant (`file.py:smoke`); an unknown name lists the valid ones."""
    if not arg:
        return config
    if arg not in variants:
        raise ConfigError(f"unknown config variant {arg!r}; choose one of: {', '.join(sorted(variants))}")
    variants[arg](config)
    return config


def smoke(config: ml_collections.ConfigDict) -> None:
    """Shrink any config to a few steps on a few examples: what the tests run for every file."""
    config.total_steps = 4
    config.batch_size = 16
    config.log_every = 1
    config.preview_every = 4
    config.eval_every = 4
    config.checkpoint.every = 2
    config.eval.batch_size = 16
    config.eval.num_examples = 32
    config.optim.warmup_steps = 0


def load(spec: str) -> ml_collections.ConfigDict:
    """The config from `path/to/file.py[:variant]`, as `--config` would build it."""
    import importlib.util
    import pathlib

    path, _, arg = spec.partition(":")
    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {file} not found; configs live in configs/*.py")
    module_spec = importlib.util.spec_from_file_location(f"_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def check_override(config: ml_collections.ConfigDict, dotted: str) -> None:
    """Raise ConfigError if `--config.<dotted>` names no field, listing the section's fields."""
    node, path = config, []
    for key in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            valid = node.keys() if isinstance(node, ml_collections.ConfigDict) else []
            raise ConfigError(_unknown(".".join(path + [key]), key, valid))
        node, path = node[key], path + [key]


def apply_override(config: ml_collections.ConfigDict, assignment: str) -> None:
    """Set `a.b.c=value` in config, the text read as the field's current type; ConfigError naming it if it cannot.

    The form scripts take (the benchmarks' `--set`), where absl's typed `--config.a.b.c` flags are not used.
    """
    dotted, sep, text = assignment.partition("=")
    if not sep:
        raise ConfigError(f"{assignment!r}: expected field=value, e.g. data.source=digits")
    check_override(config, dotted)
    *parents, key = dotted.split(".")
    node = config
    for name in parents:
        node = node[name]
    value = _parse_value(dotted, text, node[key])
    with config.unlocked():
        node[key] = value


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _parse_value(dotted: str, text: str, current: Any) -> Any:
    """`text` as a value of `current`'s type (bool, int, float, str, or a comma-separated tuple of its items' type)."""
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(f"{dotted} is a section, not a field; set one of its fields: "
                          f"{', '.join(f'{dotted}.{k}' for k in current.keys())}")
    if isinstance(current, bool):
        if text.strip().lower() not in _TRUE + _FALSE:
            raise ConfigError(f"{dotted} = {text!r} is not a boolean; use true or false")
        return text.strip().lower() in _TRUE
    if isinstance(current, (tuple, list)):
        items = [t.strip() for t in text.strip().strip("()[]").split(",") if t.strip()]
        kind = type(current[0]) if current else str
        return tuple(_parse_value(f"{dotted}[{i}]", item, kind()) for i, item in enumerate(items))
    if isinstance(current, (int, float)):
        try:
            return type(current)(text)
        except ValueError:
            raise ConfigError(f"{dotted} = {text!r} is not {'an int' if isinstance(current, int) else 'a number'}; "
                              f"the field holds {current!r}") from None
    return text


def merge(defaults: ml_collections.ConfigDict, values: dict) -> ml_collections.ConfigDict:
    """`defaults` with every field of the nested dict `values` set; the model section is taken whole."""
    for key, value in values.items():
        whole = key == "model" or is_model_section(defaults.get(key))
        if isinstance(value, dict) and not whole and isinstance(defaults.get(key), ml_collections.ConfigDict):
            merge(defaults[key], value)
        else:
            defaults[key] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
    return defaults
