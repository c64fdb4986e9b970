"""What every benchmark reports beside its figures, and how it writes them."""
from __future__ import annotations

import json
import os
import platform
from typing import Any

import jax


def machine() -> dict[str, Any]:
    """The context a figure needs to be read: backend, devices, versions, load."""
    return {"platform": platform.platform(), "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(), "jax": jax.__version__,
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def emit(results: dict[str, Any], path: str | None) -> None:
    """Print the results as JSON and, if a path is given, write the same text there."""
    text = json.dumps(results, indent=2)
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
