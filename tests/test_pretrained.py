"""The pretrained format: golden files keep loading, registry checksums are enforced, bad files are named."""
import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from zoo import errors, pretrained

GOLDEN = pathlib.Path(__file__).parent / "golden"


def test_golden_v1_export_still_loads_and_computes_the_same():
    loaded = pretrained.load(GOLDEN / "vae_mlp_tiny_v1.safetensors")
    expected = np.load(GOLDEN / "vae_mlp_tiny_v1_expected.npz")
    m, params = loaded.module, loaded.params
    assert loaded.config["model"] == "vae_mlp" and loaded.config["format_version"] == 1
    decoded = m.apply({"params": params}, jnp.asarray(expected["z"]), method=m.decode)
    mean, logvar = m.apply({"params": params}, jnp.asarray(expected["x"]), method=m.encode)
    np.testing.assert_allclose(decoded, expected["decoded"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean, expected["mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logvar, expected["logvar"], rtol=1e-5, atol=1e-6)


def test_bundled_registry_entry_loads_and_decodes_digits():
    loaded = pretrained.load("vae_digits")
    m = loaded.module
    images = m.apply({"params": loaded.params}, jnp.zeros((2, m.latent_dim)), method=m.decode)
    assert images.shape == (2, 8, 8, 1) and loaded.config["metadata"]["step"] == 3000


def test_url_entry_is_downloaded_once_and_checksum_enforced(tmp_path, monkeypatch):
    source = GOLDEN / "vae_mlp_tiny_v1.safetensors"
    good = pretrained.Entry(sha256=pretrained.sha256(source), url=source.as_uri())
    monkeypatch.setitem(pretrained.REGISTRY, "tiny", good)
    loaded = pretrained.load("tiny", cache_dir=tmp_path)
    assert loaded.config["model"] == "vae_mlp"
    assert len(list(tmp_path.glob("tiny-*.safetensors"))) == 1

    bad = pretrained.Entry(sha256="0" * 64, url=source.as_uri())
    monkeypatch.setitem(pretrained.REGISTRY, "tampered", bad)
    with pytest.raises(ValueError, match="sha256 mismatch for pretrained 'tampered'"):
        pretrained.load("tampered", cache_dir=tmp_path)


def test_unknown_name_lists_the_registry():
    with pytest.raises(FileNotFoundError, match="vae_digits"):
        pretrained.load("no_such_model")


def _rewrite(tmp_path, drop: tuple[str, ...] = (), **header_changes) -> pathlib.Path:
    """The golden export with some arrays and metadata fields replaced and the fields in `drop` removed."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    source = GOLDEN / "vae_mlp_tiny_v1.safetensors"
    with safe_open(str(source), framework="numpy") as f:
        header = {k: v for k, v in f.metadata().items() if k not in drop}
    arrays = load_file(str(source))
    arrays.update(header_changes.pop("arrays", {}))
    header.update(header_changes)
    out = tmp_path / "changed.safetensors"
    save_file(arrays, str(out), metadata=header)
    return out


def test_newer_format_version_says_upgrade(tmp_path):
    with pytest.raises(ValueError, match="upgrade deepfake-zoo"):
        pretrained.load(_rewrite(tmp_path, format_version="2"))


def test_wrong_param_shape_is_named(tmp_path):
    path = _rewrite(tmp_path, arrays={"head/bias": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="head/bias"):
        pretrained.load(path)


def test_model_config_mismatch_is_caught(tmp_path):
    config = {"image_shape": [4, 4, 1], "latent_dim": 3, "hidden": [8], "activation": "tanh",
              "likelihood": "bernoulli", "dtype": "float32"}
    with pytest.raises(ValueError, match="wrong shape for its model config: dec_0/kernel"):
        pretrained.load(_rewrite(tmp_path, model_config=json.dumps(config)))


def test_not_a_weights_file(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a readable .safetensors"):
        pretrained.load(junk)


def _refused(path: pathlib.Path, *needed: str) -> str:
    """The WeightsError message `pretrained.load(path)` raises, checked to name the file and each of `needed`."""
    with pytest.raises(errors.WeightsError) as refused:
        pretrained.load(path)
    message = str(refused.value)
    for text in (str(path), *needed):
        assert text in message
    return message


@pytest.mark.parametrize("version", ["one", "1.0", ""])
def test_format_version_that_is_not_an_integer_is_named(tmp_path, version):
    _refused(_rewrite(tmp_path, format_version=version), f"format_version {version!r}", "not an integer")


def test_missing_format_version_is_named(tmp_path):
    _refused(_rewrite(tmp_path, drop=("format_version",)), "format_version None", "not an integer")


def test_missing_model_config_is_named(tmp_path):
    _refused(_rewrite(tmp_path, drop=("model_config",)), "no 'model_config'")


def test_model_config_that_is_not_json_is_named(tmp_path):
    _refused(_rewrite(tmp_path, model_config="{latent_dim: 2"), "'model_config' that is not valid JSON")


def test_a_model_config_whose_example_inputs_cannot_be_built_is_named(tmp_path):
    """A negative latent_dim fails in the model's own example_inputs, before init (found by tests/test_fuzz.py)."""
    config = {"image_shape": [4, 4, 1], "latent_dim": -1, "hidden": [8], "activation": "tanh",
              "likelihood": "bernoulli", "dtype": "float32"}
    _refused(_rewrite(tmp_path, model_config=json.dumps(config)), "cannot be built with", "re-export it")


def test_float16_arrays_are_refused_for_a_float32_model(tmp_path):
    from safetensors.numpy import load_file

    halves = {k: v.astype(np.float16) for k, v in load_file(str(GOLDEN / "vae_mlp_tiny_v1.safetensors")).items()}
    message = _refused(_rewrite(tmp_path, arrays=halves), "wrong dtype", "head/bias: float16 != float32")
    assert message.count("float16 != float32") == len(halves)


def test_one_float16_array_among_float32_is_named(tmp_path):
    path = _rewrite(tmp_path, arrays={"enc_0/bias": np.zeros(8, np.float16)})
    _refused(path, "enc_0/bias: float16 != float32")
