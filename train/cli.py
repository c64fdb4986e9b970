"""Shared set-up for the command-line entry points (train, evaluate, export)."""
from __future__ import annotations

import logging

from absl import logging as absl_logging


def setup_logging() -> None:
    """Our INFO messages (resume, fallbacks) on stderr; the libraries' INFO chatter (orbax) off."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    for name in ("train", "data", "zoo"):
        logging.getLogger(name).setLevel(logging.INFO)
