"""The experiment config: the base every config file extends, and start-up validation.

Config files in `configs/` build on `base_config()` and return a ConfigDict; the trainer calls
`validate` before touching data or devices, so a misspelt field, a wrong type or an impossible
value fails in the first second with the field named and the valid choices listed.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from typing import Any, Iterable

import jax
import ml_collections

from train.sections import (  # noqa: F401  (re-exported: the config API in one place)
    apply_variant,
    base_config,
    load,
    model_section,
    smoke,
)
from zoo.errors import ConfigError  # noqa: F401  (re-exported: configs and the CLIs raise it from here)

STRATEGIES = ("jit", "pmap")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "adabelief", "sgd")
SCHEDULES = ("constant", "cosine")
DTYPES = ("float32", "bfloat16", "float16")


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
    if not config.optim.learning_rate > 0:  # NaN fails this too
        raise ConfigError(f"optim.learning_rate = {config.optim.learning_rate} must be a number > 0")
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
            if isinstance(value, (tuple, list)) and isinstance(expected, (tuple, list)):
                raise ConfigError(f"{path} = {tuple(value)!r} holds items that are not {type(expected[0]).__name__}, "
                                  f"as its default {tuple(expected)!r}; write a comma list of them, or "
                                  f"--config.{path}='()' for none")
            raise ConfigError(f"{path} = {value!r} has type {type(value).__name__}; expected {type(expected).__name__}")
    missing = [key for key in reference.keys() if key not in config]
    if missing:  # e.g. --config.optim={} or --config.optim="{'name': 'sgd'}": a section override replaces it whole
        raise ConfigError(f"{prefix}{missing[0]} is missing from the config ({len(missing)} field(s) of section "
                          f"{prefix[:-1] or 'the top level'} are); an override of a whole section replaces every "
                          f"field in it: set single fields instead, e.g. --config.{prefix}{missing[0]}=...")


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
    if isinstance(expected, (tuple, list)):  # items as the default's first (an empty default takes any)
        return isinstance(value, (tuple, list)) and (not expected or all(_same_kind(v, expected[0]) for v in value))
    return isinstance(value, type(expected))


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


def model_field_defaults() -> dict[str, dict[str, Any]]:
    """Each registered model's config fields and defaults, read from the live registry.

    What `model_fields.json` must equal; `image_shape` comes from the data and `param_dtype` stays
    float32, so neither is a config field, and `dtype` defaults to float32 on every model.
    """
    from zoo import registry

    out = {}
    for name in registry.list_models():
        fields = {}
        for field in dataclasses.fields(registry.model_class(name)):
            if field.name in ("parent", "name", "image_shape", "param_dtype"):
                continue
            default = "float32" if field.name == "dtype" else field.default
            fields[field.name] = list(default) if isinstance(default, tuple) else default
        out[name] = fields
    return out


def write_model_fields() -> None:
    """Regenerate `train/model_fields.json` from the registry (after adding or changing a model)."""
    from train import sections

    sections.MODEL_FIELDS.write_text(json.dumps(model_field_defaults(), indent=1) + "\n")
