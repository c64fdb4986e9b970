"""Where a run's numbers and preview images go: `metrics.jsonl` (one JSON object per logged step) and TensorBoard.

TensorBoard event files are written with tensorboardX, which needs no TensorFlow. Only process 0
writes; the other processes get a writer that drops everything.
"""
from __future__ import annotations

import json
import math
import pathlib
import time
from typing import Mapping

import jax
import numpy as np


class MetricWriter:
    """Appends `{"step", "time", "<prefix>/<name>": value}` lines and mirrors the numbers as TB scalars.

    String values (an evaluation's protocol line) go to the JSON lines only.
    """

    def __init__(self, workdir: str | pathlib.Path, tensorboard: bool = True) -> None:
        self.enabled = jax.process_index() == 0
        self.workdir = pathlib.Path(workdir)
        self._jsonl = None
        self._tb = None
        if self.enabled:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.workdir / "metrics.jsonl", "a", buffering=1)
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(self.workdir / "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, float], prefix: str = "train") -> None:
        if not self.enabled:
            return
        scalars = {f"{prefix}/{k}": float(v) for k, v in metrics.items() if not isinstance(v, str)}
        texts = {f"{prefix}/{k}": v for k, v in metrics.items() if isinstance(v, str)}
        record = {"step": int(step), "time": time.time(), **{k: _json_number(v) for k, v in scalars.items()}, **texts}
        self._jsonl.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, int(step))

    def write_image(self, step: int, name: str, image: np.ndarray) -> None:
        """Add an HxWxC (C in 1, 3) uint8 image to TensorBoard as `name`, so previews sit beside the curves."""
        if self._tb is None:
            return
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] not in (1, 3):
            raise ValueError(f"write_image wants an HxWxC uint8 image, C in (1, 3); got {array.dtype} {array.shape}")
        self._tb.add_image(name, array, int(step), dataformats="HWC")

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)
