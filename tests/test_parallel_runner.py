"""train.parallel.Runner.compile_step: state donation on by default, off on request, same result either way."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train import parallel


def _step(state, batch, rng):
    new = dict(state, w=state["w"] + parallel.pmean(batch["x"].mean()), noise=jax.random.uniform(rng, ()))
    return new, {"w": state["w"]}


@pytest.mark.parametrize("strategy", ["jit", "pmap"])
def test_the_input_state_is_donated_unless_asked_not_to(strategy):
    runner = parallel.Runner.create(strategy, 2)
    batch = runner.put_batch({"x": np.ones((4, 3), np.float32)})
    results = {}
    for donate in (True, False):
        state = runner.put_state({"w": jnp.zeros(()), "noise": jnp.zeros(()), "step": jnp.int32(0)})
        new, metrics = runner.compile_step(_step, jax.random.key(0), 0, donate=donate)(state, batch, 5)
        assert state["w"].is_deleted() is donate
        results[donate] = jax.tree.map(np.asarray, runner.get_state(new))
        assert float(np.asarray(metrics["w"])) == 0.0
    assert results[True]["w"] == results[False]["w"] == 1.0
    assert results[True]["noise"] == results[False]["noise"] and results[True]["step"] == 6
