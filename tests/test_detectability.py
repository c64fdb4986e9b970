"""`--metrics detectability`: a pinned detector's scores of a run's own fakes, checked without trusting the driver.

A tiny ResNet detector is trained for a few steps on DF swaps of synthetic people (a detect run) and
exported by `train.export`, which pins its 5%-FPR threshold; the bundled DF swap export is then scored.
The reference reads the threshold from the file's header, makes the swaps with the catalogue model's own
swap (`zoo.fake_makers`), scores them with the detector's `apply`, and takes the AUC from scikit-learn.
"""
import hashlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open
from sklearn.metrics import roc_auc_score

import zoo
from data import provenance, sources
from train import evaluate, evaluators, export, runs, sections, trainer
from zoo import fake_makers, pretrained
from zoo.errors import ConfigError, WeightsError

ROOT = pathlib.Path(__file__).resolve().parents[1]
SWAP = "swap_df_synthetic_narrow"
N = 10  # the swap's first 10 evaluation pairs: batches of 8, the second padded


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory):
    """A detect run's workdir, its config and its export (with the pinned threshold)."""
    config = sections.load(str(ROOT / "configs/detect_swap_synthetic.py:smoke"))
    config.model = sections.model_section("resnet_detector", stages=(1, 1), widths=(8, 16))
    config.data.worker_count = 0
    config.total_steps = config.checkpoint.every = 6
    config.eval_every = config.preview_every = 0
    config.optim.learning_rate = 3e-3
    workdir = tmp_path_factory.mktemp("detect") / "run"
    trainer.train(config, workdir)
    return workdir, config, export.export_run(workdir)


@pytest.fixture(scope="module")
def swap_run():
    loaded = runs.load_export(SWAP)
    return loaded.setup, loaded.state


def _header(path: pathlib.Path) -> dict:
    with safe_open(str(path), framework="numpy") as f:
        return json.loads(f.metadata()["metadata"])


def _scores(path: pathlib.Path, images: np.ndarray) -> np.ndarray:
    detector = pretrained.load(path)
    out = detector.module.apply(detector.variables, jnp.asarray(images, jnp.float32) / 255.0, train=False)
    return np.asarray(out, np.float64)


def test_the_export_pins_the_5pct_fpr_threshold_of_the_detect_runs_evaluation_reals(detect_run):
    workdir, config, path = detect_run
    pinned = _header(path)["threshold"]
    mix = sources.get_source(config.data.eval_source, config.data.eval_split)
    rows = [mix[i] for i in range(min(config.eval.num_examples, len(mix)))]
    reals = np.stack([r["image"] for r in rows if r["label"] == 0])
    scores = _scores(path, reals)
    t = pinned["logit"]
    assert pinned["fpr"] == 0.05 and pinned["num_reals"] == len(reals) and pinned["image_shape"] == [64, 64, 3]
    assert pinned["source"].startswith(config.data.eval_source)
    # The lowest threshold flagging at most 5% of these reals: one of their scores, at or below which any
    # threshold would flag more than 5%.
    assert np.min(np.abs(scores - t)) < 1e-5
    assert np.mean(scores > t + 1e-5) <= 0.05 < np.mean(scores > t - 1e-5)


def test_swap_detectability_is_the_detectors_auc_and_flag_rate_on_the_swaps_and_their_target_faces(
        detect_run, swap_run):
    _, _, path = detect_run
    setup, state = swap_run
    results = evaluators.run_metrics(setup.family, state, setup.eval_source, names=("detectability",), batch_size=8,
                                     seed=0, num_examples=N, detector=str(path))
    rows = [setup.eval_source[i] for i in range(N)]
    real = {side: np.stack([r[f"{side}_image"] for r in rows]) for side in ("a", "b")}
    module, variables = zoo.create_model(SWAP, pretrained=True)
    threshold = _header(path)["threshold"]["logit"]
    expected = {}
    for kind, source_side, target_side in (("a2b", "a", "b"), ("b2a", "b", "a")):
        swap = fake_makers.fake_maker(module, variables, kind)
        fakes = provenance.to_uint8(np.asarray(swap(jnp.asarray(real[source_side], jnp.float32) / 255.0, None)))
        fake_scores, real_scores = _scores(path, fakes), _scores(path, real[target_side])
        labels = np.r_[np.ones(N), np.zeros(N)]
        expected |= {f"detectability/{kind}/auc": roc_auc_score(labels, np.r_[fake_scores, real_scores]),
                     f"detectability/{kind}/flagged": np.mean(fake_scores > threshold),
                     f"detectability/{kind}/real_flagged": np.mean(real_scores > threshold)}
    assert set(results) == set(expected) | {"detectability/protocol"}
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, abs=1e-9), key


def test_the_protocol_line_names_the_detector_its_sha256_and_threshold(detect_run, swap_run):
    _, _, path = detect_run
    setup, state = swap_run
    results = evaluators.run_metrics(setup.family, state, setup.eval_source, names=("detectability",), batch_size=8,
                                     seed=0, num_examples=8, detector=str(path))
    line = results["detectability/protocol"]
    pinned = _header(path)["threshold"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() in line
    assert "resnet_detector" in line and path.name in line and f"{pinned['logit']:.6g}" in line
    assert f"on {pinned['num_reals']} reals of {pinned['source']}" in line


def test_vae_samples_and_reconstructions_are_scored_against_the_splits_images(tmp_path):
    """`sample` and `reconstruction` fakes both meet the split's own images; a hand-written pinned threshold."""
    loaded = runs.load_export("vae_digits")
    setup, state = loaded.setup, loaded.state
    module = zoo.create_model("resnet_detector", stages=(1,), widths=(4,))
    variables = module.init(jax.random.key(3), jnp.zeros((1, 8, 8, 1)))
    path = pretrained.export(tmp_path / "det.safetensors", "resnet_detector", {"stages": [1], "widths": [4]},
                             variables["params"], collections={"batch_stats": variables["batch_stats"]},
                             input_shape=(8, 8, 1),
                             metadata={"threshold": {"logit": 0.0, "fpr": 0.05, "num_reals": 1, "source": "by hand",
                                                     "image_shape": [8, 8, 1]}})
    results = evaluators.run_metrics(setup.family, state, setup.eval_source, names=("detectability",), batch_size=16,
                                     seed=0, num_examples=20, detector=str(path))
    batch = {k: v[:20] for k, v in evaluators.preview_batch(setup.eval_source, 20).items()} | {
        "index": np.arange(20)}
    fakes = jax.jit(setup.family.generate)(state, batch, evaluators.eval_key(0))
    real_scores = _scores(path, batch["image"])
    labels = np.r_[np.ones(20), np.zeros(20)]
    for kind in ("sample", "reconstruction"):
        fake_scores = _scores(path, provenance.to_uint8(np.asarray(fakes[kind])))
        assert results[f"detectability/{kind}/auc"] == pytest.approx(
            roc_auc_score(labels, np.r_[fake_scores, real_scores]), abs=1e-9)
        assert results[f"detectability/{kind}/flagged"] == pytest.approx(np.mean(fake_scores > 0.0), abs=1e-9)
        assert results[f"detectability/{kind}/real_flagged"] == pytest.approx(np.mean(real_scores > 0.0), abs=1e-9)


def test_no_detector_in_the_config_is_an_error_naming_the_field(swap_run):
    setup, state = swap_run
    with pytest.raises(ConfigError, match=r"set eval\.detector .*train\.export"):
        evaluators.run_metrics(setup.family, state, setup.eval_source, names=("detectability",), batch_size=8, seed=0,
                               num_examples=8)


def test_a_detector_without_a_pinned_threshold_is_refused_saying_how_to_make_one(detect_run, swap_run, tmp_path):
    _, _, path = detect_run
    setup, state = swap_run
    loaded = pretrained.load(path)
    bare = pretrained.export(tmp_path / "bare.safetensors", loaded.config["model"], loaded.config["model_config"],
                             loaded.params, collections=loaded.collections, input_shape=(64, 64, 3))
    with pytest.raises(WeightsError, match=r"bare\.safetensors .*no pinned threshold.*python -m train\.export"):
        evaluators.run_metrics(setup.family, state, setup.eval_source, names=("detectability",), batch_size=8, seed=0,
                               num_examples=8, detector=str(bare))


def test_a_detector_of_another_image_size_is_refused_naming_both_sizes(detect_run):
    _, _, path = detect_run
    loaded = runs.load_export("vae_digits")
    with pytest.raises(ConfigError, match=r"64x64x3 images, but the .* images here are 8x8x1"):
        evaluators.run_metrics(loaded.setup.family, loaded.state, loaded.setup.eval_source, names=("detectability",),
                               batch_size=16, seed=0, num_examples=16, detector=str(path))


def test_detectability_is_offered_to_families_that_make_fakes_only(detect_run, swap_run):
    workdir, _, path = detect_run
    setup, state = swap_run
    with pytest.raises(ConfigError, match="this family has: .*detectability"):
        evaluators.run_metrics(setup.family, state, setup.eval_source, names=("nosuch",), batch_size=8, seed=0)
    with pytest.raises(ConfigError, match=r"unknown metrics \['detectability'\]"):
        evaluate.evaluate(workdir, metrics=["detectability"], detector=str(path))


@pytest.mark.parametrize("name, wrong", [("resnet_detector", (16, 16, 3)), ("spectrum_durall_detector", (32, 32, 1))])
def test_a_detector_export_loads_back_with_its_collections_checked_against_its_input_shape(tmp_path, name, wrong):
    """Detectors take any image size, so the file records the one their arrays were built for."""
    module = zoo.create_model(name)
    variables = dict(module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1))))
    params = variables.pop("params")
    variables = jax.tree.map(lambda v: v + 0.5, variables)  # not the init values: a collection must round-trip
    path = pretrained.export(tmp_path / "d.safetensors", name, {}, params, collections=variables,
                             input_shape=(16, 16, 1))
    loaded = pretrained.load(path)
    jax.tree.map(np.testing.assert_array_equal, loaded.variables, {"params": params, **variables})
    pretrained.export(tmp_path / "wrong.safetensors", name, {}, params, collections=variables, input_shape=wrong)
    with pytest.raises(WeightsError, match="wrong shape"):
        pretrained.load(tmp_path / "wrong.safetensors")
    pretrained.export(tmp_path / "none.safetensors", name, {}, params, collections=variables)
    with pytest.raises(WeightsError, match="takes images of any size, but no input_shape"):
        pretrained.load(tmp_path / "none.safetensors")
