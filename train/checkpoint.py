"""Orbax checkpoints of a run: train state, data-iterator position and JSON metadata per step.

Layout: `<workdir>/checkpoints/<step>/{state, data, meta}`. Saves are asynchronous (the device
arrays are copied to host before `save` returns, then written in the background) and only
finalised steps are ever listed, so a process killed mid-write leaves the previous checkpoint
as the newest. A finalised step that still fails to restore (truncated or corrupted files) is
moved to `<workdir>/checkpoints_corrupt/` with a warning and the previous one is tried: a bad
file never stops the run and no good checkpoint is deleted.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil
import time
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Restored:
    """A checkpoint read back: its step, state (as the abstract target laid out), and metadata."""

    step: int
    state: Any
    meta: dict


class Checkpointer:
    """Saves and restores one run's checkpoints; `keep_every` steps are kept beyond `max_to_keep`."""

    def __init__(self, workdir: str | pathlib.Path, *, max_to_keep: int = 3, keep_every: int = 0) -> None:
        self.workdir = pathlib.Path(workdir).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep or None,
            keep_period=keep_every or None,
            enable_async_checkpointing=True,
            create=True,
        )
        self.manager = ocp.CheckpointManager(
            self.workdir / "checkpoints", options=options, item_names=("state", "data", "meta")
        )

    def steps(self) -> list[int]:
        """Finalised checkpoint steps, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_iterator: Any | None, meta: dict) -> None:
        """Start saving `state` (canonical form), the iterator position and `meta` at `step`."""
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore_latest(self, abstract_state: Any, data_iterator: Any | None) -> Restored | None:
        """The newest checkpoint that restores cleanly (None if there is none)."""
        for step in reversed(self.steps()):
            try:
                return self.restore(step, abstract_state, data_iterator)
            except Exception as error:  # noqa: BLE001  (any failure means: this step is unusable)
                self._quarantine(step, error)
        return None

    def restore(self, step: int, abstract_state: Any, data_iterator: Any | None = None) -> Restored:
        """Checkpoint `step` laid out like `abstract_state` (shapes, dtypes, target shardings)."""
        items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        _check_structure(restored["state"], abstract_state, step)
        return Restored(step, restored["state"], dict(restored["meta"] or {}))

    def wait(self) -> None:
        """Block until every started save is on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def _quarantine(self, step: int, error: Exception) -> None:
        source = self.workdir / "checkpoints" / str(step)
        target = self.workdir / "checkpoints_corrupt" / f"{step}-{int(time.time())}"
        log.warning(
            "checkpoint %s cannot be restored (%s: %s); moved to %s, trying the previous one",
            source, type(error).__name__, str(error).splitlines()[0][:300] if str(error) else "", target,
        )
        if jax.process_index() == 0 and source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(source), str(target))
        self.manager.reload()


def _check_structure(state: Any, abstract_state: Any, step: int) -> None:
    """A restored tree must have the target's structure and shapes; anything else is corruption."""
    got, want = jax.tree.structure(state), jax.tree.structure(abstract_state)
    if got != want:
        raise ValueError(f"checkpoint {step} has tree structure {got}, expected {want}")
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(abstract_state)):
        if a.shape != b.shape:
            raise ValueError(f"checkpoint {step} has an array of shape {a.shape}, expected {b.shape}")
