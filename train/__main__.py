"""`python -m train --config configs/<file>.py[:variant] --workdir runs/<name> [--config.field=value]`."""
from __future__ import annotations

import pathlib

from absl import flags
from ml_collections import config_flags

from train import cli
from train.config import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file, optionally :variant.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Directory for checkpoints, metrics and previews (resumed if it exists).")
_FIX = "Fix the field name or value; the config file lists every valid field."


def _parse(argv: list[str]) -> list[str]:
    """absl parsing with config errors raised as one readable ConfigError instead of a traceback."""
    spec = _config_spec(argv)
    file = pathlib.Path(spec.partition(":")[0]) if spec is not None else None
    if file is not None and not file.is_file():
        raise ConfigError(f"config file {file} not found; pass --config configs/<file>.py[:variant] (see configs/)")
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
        diagnosed = _diagnose(argv, spec)
        if diagnosed is not None:
            raise diagnosed from None
        raise ConfigError(_flag_message(error)) from error


def _config_spec(argv: list[str]) -> str | None:
    """The raw `--config` value on the command line, if any."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None and "--config" in argv[:-1]:
        spec = argv[argv.index("--config") + 1]
    return spec


def _flag_message(error: Exception) -> str:
    """absl's message for a bad flag, unquoted and unescaped, with the fix."""
    message = str(error).strip("'\"").replace("\\n", " ").replace("\\'", "'").replace('\\"', '"')
    if isinstance(error, (AttributeError, KeyError)):
        message = f"unknown field {message}"
    return f"{message}\n{_FIX}"


def _diagnose(argv: list[str], spec: str | None) -> ConfigError | None:
    """Our own error for the config (a bad variant) or the first --config.<path> override that names no field."""
    from train import config as config_lib

    try:
        config = config_lib.load(spec)
        for arg in argv:
            if arg.startswith("--config."):
                config_lib.check_override(config, arg[len("--config."):].split("=", 1)[0])
    except Exception as error:  # noqa: BLE001  (fall back to absl's own message)
        return error if isinstance(error, ConfigError) else None
    return None


def main(argv: list[str]) -> None:
    """Train the config in the workdir, once the workdir is known to be writable (no data is read before)."""
    del argv
    if _CONFIG.value is None or not _WORKDIR.value:
        cli.fail("usage: python -m train --config configs/vae_digits.py[:smoke] --workdir runs/NAME")
    cli.check_writable(_WORKDIR.value, "pass another --workdir")
    from train import trainer

    cli.setup_logging()
    trainer.train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main, flags_parser=_parse)
