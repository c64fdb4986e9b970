"""Test set-up: 8 simulated CPU devices and the CLIs' XLA:CPU flag, set before JAX starts."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from zoo import xla_cpu  # noqa: E402

xla_cpu.apply()  # what the CLIs run with: importing zoo no longer sets it

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")
#: How to install the optional PyTorch reference: the `reference` extra, then torch-fidelity without torchvision.
REFERENCE_INSTALL = "pip install -e '.[reference]' && pip install --no-deps torch-fidelity==0.3.0"


def import_torch():
    """torch, or a skip carrying the `reference` extra's install command (works at module level too)."""
    return pytest.importorskip("torch", reason=f"torch is not installed (the PyTorch reference): {REFERENCE_INSTALL}")


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data, or a skip naming what is missing."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (present on CI and developer machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def analyzer():
    """dlib's shared face analyzer (data.faces.dlib_models.FaceAnalyzer), or a skip carrying the install command."""
    from data.faces import dlib_models

    try:
        return dlib_models.FaceAnalyzer()
    except ImportError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session", autouse=True)
def _absl_flags_parsed():
    """grain's worker processes read absl flags; pytest never parses them."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def set_fields(config, overrides: dict):
    """Set `{"a.b.c": value}` fields on a ConfigDict in place (lists become tuples), as --config.a.b.c would."""
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = tuple(value) if isinstance(value, list) else value
    return config


class ItemsOnly:
    """`source` seen only through info, len and item access: no `gather`, no `frame_index`, nothing else it has.

    What the slow paths of a reader see, so a test can check they equal the fast ones.
    """

    def __init__(self, source):
        self.info, self._source = source.info, source

    def __len__(self):
        return len(self._source)

    def __getitem__(self, i):
        return self._source[i]
