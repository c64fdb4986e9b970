"""Data parallelism as a config switch: sharded `jax.jit` over a device mesh, or `jax.pmap`.

Families are written once, as functions of one replica's view: they call `pmean` for every
cross-device mean and `example_keys` for per-example randomness. Under sharded jit `pmean` is the
identity (the global-batch mean already is the reduction) and under pmap it is `lax.pmean`; example
keys are derived from each example's global index, so one device, eight devices under jit and eight
under pmap draw identical noise and reach identical parameters.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from zoo import layers

AXIS = layers.DATA_AXIS

StepFn = Callable[[Any, Any, jax.Array], tuple[Any, dict]]
FINITE = "_state_finite"  # reserved metric: one flag per array of the updated state, popped by the trainer


def axis_bound() -> bool:
    """True inside a pmap over the data axis, False under (sharded) jit."""
    return layers.bound_data_axis() is not None


def pmean(tree: Any) -> Any:
    """Mean over data-parallel replicas: lax.pmean under pmap, identity under sharded jit."""
    return lax.pmean(tree, AXIS) if axis_bound() else tree


def example_keys(key: jax.Array, local_batch: int) -> jax.Array:
    """One key per example, `fold_in(key, global index)`, the same under every strategy."""
    offset = lax.axis_index(AXIS) * local_batch if axis_bound() else 0
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(offset + jnp.arange(local_batch))


def initialize_distributed(enabled: bool) -> None:
    """Join a multi-process run (coordinator and ids from the environment, as jax documents)."""
    if enabled and not jax.distributed.is_initialized():
        jax.distributed.initialize()


@dataclasses.dataclass(frozen=True)
class Runner:
    """Places state and batches on devices and compiles steps for one strategy.

    The trainer holds state in the runner's device form (`put_state`); `get_state` returns the
    canonical, strategy-free form that checkpoints, previews and evaluation use.
    """

    strategy: str
    mesh: Mesh

    @classmethod
    def create(cls, strategy: str, num_devices: int = 0) -> "Runner":
        """A runner over all devices (jit: global, pmap: this process's) or the first `num_devices`."""
        devices = jax.devices() if strategy == "jit" else jax.local_devices()
        return cls(strategy, Mesh(np.asarray(devices[: num_devices or None]), (AXIS,)))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    @property
    def batch_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, P(AXIS))

    def state_shardings(self, abstract_state: Any) -> Any:
        """Canonical-form shardings: everything replicated (data parallelism)."""
        return jax.tree.map(lambda _: self.replicated, abstract_state)

    def put_state(self, state: Any) -> Any:
        if self.strategy == "jit":
            return jax.device_put(state, self.replicated)
        n = self.mesh.size
        stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x)), state)
        return jax.device_put(stacked, self.batch_sharding)

    def get_state(self, device_state: Any) -> Any:
        if self.strategy == "jit":
            return device_state
        return jax.device_put(jax.tree.map(lambda x: x[0], device_state), self.replicated)

    def put_batch(self, local_batch: dict) -> Any:
        """A process-local numpy batch as the global device batch the compiled steps take."""
        if self.strategy == "jit":
            return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.batch_sharding, x), local_batch)
        n = self.mesh.size
        split = jax.tree.map(lambda x: np.reshape(x, (n, x.shape[0] // n) + x.shape[1:]), local_batch)
        return jax.device_put(split, self.batch_sharding)

    def init(self, init_fn: Callable[..., Any], *args: Any) -> Any:
        """Run `init_fn(*args)` compiled, producing the state directly in device form."""
        abstract = jax.eval_shape(init_fn, *args)
        state = jax.jit(init_fn, out_shardings=self.state_shardings(abstract))(*args)
        return self.put_state(state) if self.strategy == "pmap" else state

    def compile_step(self, fn: StepFn, root_key: jax.Array, index: int, donate: bool = True,
                     skip_nonfinite: bool = False) -> Callable[[Any, Any, int], tuple[Any, dict]]:
        """`(state, batch, step) -> (state, metrics)` with rng = fold_in(fold_in(root, step), index).

        The wrapper sets `state["step"]` to step + 1; metrics come back as replicated scalars (the
        first replica's copy under pmap, where all are equal), plus `metrics[FINITE]`: whether each
        array of the updated state (leaf order, `step` left out) is finite, reduced inside the step so the
        trainer can refuse to checkpoint a poisoned state without another pass over it.
        `skip_nonfinite` keeps the old state (step still advances) when any flag is false. The input
        state is donated, so its buffers hold the new state; `donate=False` keeps it alive
        (benchmarks compare the two).
        """
        donated = (0,) if donate else ()

        def wrapped(state, batch, step):
            rng = jax.random.fold_in(jax.random.fold_in(root_key, step), index)
            new_state, metrics = fn(dict(state, step=step), batch, rng)
            new_state = _without_step(new_state)
            finite = jnp.stack([jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
                                for x in jax.tree.leaves(new_state)])
            if skip_nonfinite:
                ok = finite.all()
                new_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, _without_step(state))
            return dict(new_state, step=step + 1), dict(metrics, **{FINITE: finite})

        if self.strategy == "jit":
            compiled = jax.jit(
                wrapped,
                in_shardings=(self.replicated, self.batch_sharding, self.replicated),
                out_shardings=(self.replicated, self.replicated),
                donate_argnums=donated,
            )
            return lambda state, batch, step: compiled(state, batch, np.int32(step))

        pmapped = jax.pmap(wrapped, axis_name=AXIS, in_axes=(0, 0, None), donate_argnums=donated)

        def run(state, batch, step):
            state, metrics = pmapped(state, batch, np.int32(step))
            return state, jax.tree.map(lambda m: m[0], metrics)

        return run


def _without_step(state: dict) -> dict:
    return {k: v for k, v in state.items() if k != "step"}
