"""Orbax checkpoints of a run: train state, data-iterator position and JSON metadata per step.

Layout: `<workdir>/checkpoints/<step>/{state, data, meta}`. Saves are asynchronous (the device
arrays are copied to host before `save` returns, then written in the background) and only
finalised steps are ever listed, so a process killed mid-write leaves the previous checkpoint
as the newest.

Every checkpoint's `meta` records a CRC-32 of each state array, because Orbax stores array chunks
without one: a flipped bit would otherwise resume from wrong values. A finalised step that fails
to read, fails its checksums or holds non-finite values is moved to
`<workdir>/checkpoints_corrupt/` with one warning line and the previous one is tried: a bad file
never stops the run and no good checkpoint is deleted. A checkpoint that reads fine but was made
by an incompatible config is not corrupt: `restore_latest`'s `check` stops the run instead.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import re
import shutil
import sys
import time
import zlib
from typing import Any, Callable, Iterator

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

Layout = dict[str, tuple[tuple[int, ...], str]]  # "params/G/conv/kernel" -> (shape, dtype name)
Check = Callable[[int, dict, Layout], bool]  # raises to stop; returns whether the saved data position applies


class IntegrityError(ValueError):
    """A checkpoint's arrays differ from the checksums recorded when it was saved, or are non-finite."""


@dataclasses.dataclass
class Restored:
    """A checkpoint read back: its step, state (as the abstract target laid out), and metadata."""

    step: int
    state: Any
    meta: dict
    data_restored: bool = True


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
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler(),
                    "data": grain.checkpoint.CheckpointHandler()}
        self.manager = ocp.CheckpointManager(self.workdir / "checkpoints", options=options, item_handlers=handlers)

    def steps(self) -> list[int]:
        """Finalised checkpoint steps, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_iterator: Any | None, meta: dict) -> None:
        """Start saving `state` (canonical form), the iterator position and `meta` plus the state's checksums."""
        meta = dict(meta, checksums=checksums(state))
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore_latest(self, abstract_state: Any, data_iterator: Any | None, check: Check | None = None
                       ) -> Restored | None:
        """The newest checkpoint that restores cleanly (None if there is none).

        `check(step, meta, layout)` sees each candidate's metadata and saved array layout before
        any array is read; what it raises propagates (a config mismatch is the user's to resolve,
        not a corrupt file), and False leaves the data iterator unrestored (its saved position no
        longer applies; `Restored.data_restored` says so). Read and integrity failures quarantine
        the step and try the previous.
        """
        steps = self.steps()
        for step in reversed(steps):
            try:
                meta, layout = self.inspect(step)
            except Exception as error:  # noqa: BLE001  (unreadable metadata: this step is unusable)
                self._quarantine(step, error)
                continue
            with_data = check(step, meta, layout) if check is not None else True
            try:
                return self.restore(step, abstract_state, data_iterator if with_data else None)
            except Exception as error:  # noqa: BLE001  (any read or integrity failure: this step is unusable)
                self._quarantine(step, error)
        if steps:
            log.warning("no usable checkpoint is left in %s; starting from step 0", self.workdir / "checkpoints")
        return None

    def inspect(self, step: int) -> tuple[dict, Layout]:
        """Checkpoint `step`'s metadata and the shape and dtype of each saved array, without reading arrays."""
        with _quiet_async_errors():
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            tree = self.manager.item_metadata(step)["state"]
        if meta is None or tree is None:
            raise FileNotFoundError(f"checkpoint {step} has no {'meta' if meta is None else 'state'} item")
        tree = getattr(tree, "tree", tree)
        return dict(meta), layout(tree)

    def restore(self, step: int, abstract_state: Any, data_iterator: Any | None = None) -> Restored:
        """Checkpoint `step` laid out like `abstract_state`, verified against its recorded checksums."""
        items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        with _quiet_async_errors():
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        _check_structure(restored["state"], abstract_state, step)
        meta = dict(restored["meta"] or {})
        verify(restored["state"], meta.get("checksums"), step)
        return Restored(step, restored["state"], meta, data_restored=data_iterator is not None)

    def wait(self) -> None:
        """Block until every started save is on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def _quarantine(self, step: int, error: Exception) -> None:
        source = self.workdir / "checkpoints" / str(step)
        target = self.workdir / "checkpoints_corrupt" / f"{step}-{int(time.time())}"
        log.warning("checkpoint %d cannot be restored (%s); moved to %s, trying the previous one",
                    step, _reason(error), target)
        if jax.process_index() == 0 and source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(source), str(target))
        self.manager.reload()


def layout(abstract_state: Any) -> Layout:
    """The shape and dtype of each array of a (possibly abstract) state, by slash-joined path."""
    return {name: (tuple(x.shape), str(x.dtype)) for name, x in _named_leaves(abstract_state)}


def checksums(state: Any) -> dict[str, int]:
    """CRC-32 of each array's bytes, by path: what `verify` compares a restored state with."""
    return _crc32s(jax.device_get(state))


def verify(state: Any, expected: dict[str, int] | None, step: int) -> None:
    """Raise IntegrityError if a restored array is non-finite or differs from its recorded checksum.

    Checkpoints written before checksums were recorded (`expected` None) are checked for finiteness alone.
    """
    host = jax.device_get(state)
    if expected is not None:
        got = _crc32s(host)
        bad = [name for name in sorted(set(got) | set(expected)) if got.get(name) != expected.get(name)]
        if bad:
            raise IntegrityError(f"checkpoint {step}: {len(bad)} array(s) fail their checksum, first {bad[0]}")
    for name, x in _named_leaves(host):
        if np.issubdtype(x.dtype, np.inexact) and not np.isfinite(x).all():
            raise IntegrityError(f"checkpoint {step}: {name} holds non-finite values")


def _crc32s(host: Any) -> dict[str, int]:
    return {name: zlib.crc32(np.ascontiguousarray(x).reshape(-1).view(np.uint8)) for name, x in _named_leaves(host)}


def _named_leaves(tree: Any) -> Iterator[tuple[str, Any]]:
    """(path, leaf) pairs, path components joined by '/'.

    Orbax's metadata tree spells a NamedTuple optimiser state as a dict and a tuple as a list; this
    naming is the same for both, so a saved layout and a live state compare by name.
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        yield jax.tree_util.keystr(path, simple=True, separator="/"), leaf


def _reason(error: Exception) -> str:
    """One short line saying why a checkpoint failed, without the TensorStore JSON spec or a traceback."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = re.sub(r"\{.*\}", "{...}", text)
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


@contextlib.contextmanager
def _quiet_async_errors() -> Iterator[None]:
    """Drop 'Exception ignored in <coroutine>' reports while Orbax reads a damaged checkpoint.

    A failed read abandons Orbax's pending TensorStore coroutines, and Python then prints one
    unraisable-exception traceback per coroutine (hundreds for one truncated checkpoint); the
    failure itself is reported once, by the caller.
    """
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _check_structure(state: Any, abstract_state: Any, step: int) -> None:
    """A restored tree must have the target's structure and shapes."""
    got, want = jax.tree.structure(state), jax.tree.structure(abstract_state)
    if got != want:
        raise ValueError(f"checkpoint {step} has tree structure {got}, expected {want}")
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(abstract_state)):
        if a.shape != b.shape:
            raise ValueError(f"checkpoint {step} has an array of shape {a.shape}, expected {b.shape}")
