"""Swap models that swap nothing or paint faces white, exported in the zoo's format: merges with a known answer."""
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from zoo import pretrained, registry


class IdentitySwap(nn.Module):
    """`swap(x) = (x, ones)`, with one parameter so an export holds something: its merge gives back the input."""

    resolution: int = 64

    def setup(self):
        self.gain = self.param("gain", nn.initializers.ones, ())

    def __call__(self, x_src, x_dst):
        return {"src": self.swap(x_src), "dst": self.swap(x_dst)}

    def swap(self, x, direction="b2a"):
        return x * self.gain, jnp.ones(x.shape[:-1] + (1,), x.dtype)

    def example_inputs(self):
        x = jnp.zeros((1, self.resolution, self.resolution, 3), jnp.float32)
        return x, x


class WhiteSwap(IdentitySwap):
    """Every face rendered plain white: each merged pixel then shows the mask it was blended with."""

    def swap(self, x, direction="b2a"):
        return jnp.ones_like(x) * self.gain, jnp.ones(x.shape[:-1] + (1,), x.dtype)


def export_stub(monkeypatch: pytest.MonkeyPatch, cls: type, name: str, resolution: int,
                path: pathlib.Path) -> pathlib.Path:
    """Register `cls` as model `name` for the test's duration and write its export at `resolution` to `path`."""
    monkeypatch.setitem(registry._MODELS, name, cls)
    module = cls(resolution=resolution)
    params = module.init(jax.random.key(0), *module.example_inputs())["params"]
    return pretrained.export(path, name, {"resolution": resolution}, params)
