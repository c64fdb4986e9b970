"""`python -m train --config configs/<file>.py[:variant] --workdir runs/<name> [--config.field=value]`."""
from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from train.config import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file, optionally :variant.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and previews (resumed if it exists).")


def _parse(argv: list[str]) -> list[str]:
    """absl parsing with config errors turned into one readable line instead of a traceback."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
        message = str(error).strip("'\"").replace("\\n", " ").replace("\\'", "'").replace('\\"', '"')
        if isinstance(error, (AttributeError, KeyError)):
            message = _unknown_override(argv) or f"unknown field {message}"
        sys.exit(f"config error: {message}\nFix the field name or value; the config file lists every valid field.")


def _unknown_override(argv: list[str]) -> str | None:
    """The first --config.<path> override that names no field, described with the valid choices."""
    from train import config as config_lib

    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None and "--config" in argv[:-1]:
        spec = argv[argv.index("--config") + 1]
    try:
        config = config_lib.load(spec)
        for arg in argv:
            if arg.startswith("--config."):
                config_lib.check_override(config, arg[len("--config."):].split("=", 1)[0])
    except Exception as error:  # noqa: BLE001  (fall back to absl's own message)
        return str(error) if isinstance(error, config_lib.ConfigError) else None
    return None


def main(argv: list[str]) -> None:
    del argv
    if _CONFIG.value is None or not _WORKDIR.value:
        sys.exit("usage: python -m train --config configs/vae_digits.py[:smoke] --workdir runs/NAME")
    from train import cli, trainer

    cli.setup_logging()
    try:
        trainer.train(_CONFIG.value, _WORKDIR.value)
    except ConfigError as error:
        sys.exit(f"config error: {error}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse)
