"""The swap family: SAEHD's losses behave as specified, strategies agree, data errors are clear."""
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from train import config as config_lib
from train import losses, runs
from train import optim as optim_lib
from train.families import swap
from zoo import pretrained

ROOT = pathlib.Path(__file__).resolve().parents[1]


def smoke(**overrides) -> ml_collections.ConfigDict:
    from conftest import set_fields

    return set_fields(config_lib.load(str(ROOT / "configs/swap_df_synthetic.py:smoke")), overrides)


def _faces(seed, n=2, res=64):
    rng = np.random.default_rng(seed)
    target = jnp.asarray(rng.uniform(size=(n, res, res, 3)), jnp.float32)
    mask = np.zeros((n, res, res, 1), np.float32)
    mask[:, 16:48, 16:48] = 1.0
    return target, jnp.asarray(mask)


def test_dssim_windows_follow_saehd():
    assert swap.dssim_windows(64) == ((5, 1.0),)
    assert swap.dssim_windows(128) == ((11, 1.0),)
    assert swap.dssim_windows(256) == ((22, 0.5), (11, 0.5))


def test_side_loss_is_zero_for_a_perfect_output_and_matches_the_weighted_terms():
    hp = swap.section()
    target, mask = _faces(0)
    perfect = swap.side_loss(hp, 64, target, mask, target, mask, None)
    np.testing.assert_allclose(perfect["loss"], 0.0, atol=1e-5)

    output = jnp.clip(target + 0.1, 0, 1)
    pred_mask = mask * 0.5
    terms = swap.side_loss(hp, 64, output, pred_mask, target, mask, None)
    soft = losses.soften_mask(mask, 64)
    t, p = target * soft, output * soft
    expected = (10 * (1 - losses.ssim(t, p, filter_size=5)) / 2 + 10 * jnp.mean((t - p) ** 2, axis=(1, 2, 3))
                + 10 * jnp.mean((mask - pred_mask) ** 2, axis=(1, 2, 3)))
    np.testing.assert_allclose(terms["loss"], expected, rtol=1e-5)


def test_masked_training_ignores_the_background_and_unmasked_does_not():
    hp = swap.section()
    target, mask = _faces(1)
    outside = (losses.soften_mask(mask, 64) == 0).astype(jnp.float32)
    spoiled = target * (1 - outside) + outside * 0.5
    masked = swap.side_loss(hp, 64, spoiled, mask, target, mask, None)
    np.testing.assert_allclose(masked["loss"], 0.0, atol=1e-5)
    hp.masked_training = False
    assert np.all(swap.side_loss(hp, 64, spoiled, mask, target, mask, None)["loss"] > 0.1)


def test_eyes_mouth_priority_adds_a_weighted_l1_in_its_region():
    hp = swap.section()
    hp.eyes_mouth_prio = True
    target, mask = _faces(2)
    em = jnp.zeros_like(mask).at[:, 30:34, 20:44].set(1.0)
    output = target.at[:, 30:34, 20:44].add(-0.2)
    terms = swap.side_loss(hp, 64, output, mask, target, mask, em)
    region_l1 = float(jnp.mean(jnp.abs(target - output) * em))
    np.testing.assert_allclose(terms["eyes_mouth_l1"], region_l1, rtol=1e-5)
    without = dict(swap.side_loss(swap.section(), 64, output, mask, target, mask, None))
    np.testing.assert_allclose(terms["loss"] - without["loss"], 300 * region_l1, rtol=1e-4)
    with pytest.raises(config_lib.ConfigError, match="masks=1"):
        swap.side_loss(hp, 64, output, mask, target, mask, None)


def test_update_dropout_keeps_the_asked_fraction_reproducibly():
    tx = optim_lib.keep_updates(0.3, seed=4)
    updates = {"w": jnp.ones((200, 100)), "b": jnp.ones((50,))}
    state = tx.init(updates)
    first, state2 = tx.update(updates, state)
    again, _ = tx.update(updates, state)
    second, _ = tx.update(updates, state2)
    kept = np.asarray(first["w"])
    assert set(np.unique(kept)) == {0.0, 1.0}
    assert abs(kept.mean() - 0.3) < 0.02
    np.testing.assert_array_equal(kept, again["w"])
    assert not np.array_equal(kept, second["w"])


def test_generator_gan_terms_follow_the_bce_formula():
    hp = swap.section()
    hp.gan_power = 0.5
    target, mask = _faces(3)
    rgb = jnp.clip(target - 0.1, 0, 1)
    c, p = 0.7, -1.3
    logits_fn = lambda params, x: (jnp.full((2, 8, 8, 1), c), jnp.full((2, 64, 64, 1), p))
    terms = swap.gan_generator_terms(hp, 64, logits_fn, None, rgb, target, mask)
    expected = np.log1p(np.exp(-c)) + np.log1p(np.exp(-p))
    np.testing.assert_allclose(terms["gan_adversarial"], expected, rtol=1e-6)
    soft = np.asarray(losses.soften_mask(mask, 64))
    r = np.asarray(rgb)
    tv = np.mean((np.diff(r, axis=1) ** 2).sum((1, 2, 3)) + (np.diff(r, axis=2) ** 2).sum((1, 2, 3)))
    outside = np.mean(((r - np.asarray(target)) * (1 - soft)) ** 2)
    np.testing.assert_allclose(terms["gan_g_loss"], 0.5 * expected + 1e-6 * tv + 0.02 * outside, rtol=1e-5)
    hp.masked_training = False
    np.testing.assert_allclose(swap.gan_generator_terms(hp, 64, logits_fn, None, rgb, target, mask)["gan_g_loss"],
                               0.5 * expected, rtol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data.source_b": ""}, "needs two identities"),
        ({"model.name": "swap_liae", "swap.true_face_power": 0.01}, "swap_df only"),
        ({"model.resolution": 128}, "model.resolution = 128"),
        ({"swap.color_transfer": "mkl"}, "choose one of none, rct"),
        ({"optim.update_keep_prob": 0.0}, "update_keep_prob"),
    ],
)
def test_bad_swap_configs_fail_at_build_with_the_fix(overrides, message):

    with pytest.raises(config_lib.ConfigError, match=message):
        runs.build(smoke(**overrides))


@pytest.mark.slow  # trains a run first (about 35 s); the fast step stays under 15 min
def test_swap_truth_names_the_fix_on_data_without_ground_truth(tmp_path):
    from train import evaluate, trainer

    config = smoke(**{"data.eval_source_b": "synthetic_faces:ids=1,2;n=20;size=64", "eval_every": 0,
                      "swap.gan_power": 0.1})
    trainer.train(config, tmp_path)
    with pytest.raises(ValueError, match="--metrics=recon"):
        evaluate.evaluate(tmp_path, metrics=["swap_truth"])
    assert "a_recon_psnr" in evaluate.evaluate(tmp_path, metrics=["recon"])["metrics"]
    logged = set().union(*(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()))
    assert {"train/a_loss", "train/gan_d/loss"} <= logged, f"a second step must not rename the first's: {logged}"


@pytest.mark.slow  # 30-110 s on 2 busy cores: the fast step stays under 15 min
def test_copy_baseline_is_the_psnr_of_the_unchanged_source(tmp_path):
    """The evaluator's a2b_copy PSNR equals numpy's PSNR of A against the ground truth, over the split."""
    from data import pairs, sources
    from train import evaluate, trainer

    config = smoke(**{"eval_every": 0, "preview_every": 0})
    trainer.train(config, tmp_path)
    report = evaluate.evaluate(tmp_path, metrics=["swap_truth"], num_examples=0)
    paired = pairs.PairedSource(sources.get_source(config.data.source, "test"),
                                sources.get_source(config.data.source_b, "test"))
    psnrs = []
    for i in range(len(paired)):
        ex = paired[i]
        mse = np.mean((ex["a_image"] / 255.0 - ex["a2b_truth"] / 255.0) ** 2)
        psnrs.append(10 * np.log10(1 / mse))
    assert report["metrics"]["num_examples"] == len(paired)
    np.testing.assert_allclose(report["metrics"]["a2b_copy_psnr"], np.mean(psnrs), rtol=1e-4)


@pytest.mark.slow
def test_one_device_jit8_and_pmap8_reach_the_same_parameters(tmp_path):
    from test_trainer import assert_params_close, params_of

    from train import trainer

    assert jax.device_count() == 8
    common = {"total_steps": 3, "eval_every": 0, "preview_every": 0, "checkpoint.every": 0,
              "swap.ema_decay": 0.9, "optim.update_keep_prob": 0.5, "swap.gan_power": 0.1,
              "swap.true_face_power": 0.01, "optim.name": "sgd", "optim.learning_rate": 0.05}
    # SGD, because Adam turns float noise in near-zero gradients (discriminator biases) into lr-sized steps
    one = trainer.train(smoke(**common, **{"parallel.num_devices": 1}), tmp_path / "one")
    jit8 = trainer.train(smoke(**common), tmp_path / "jit8")
    pmap8 = trainer.train(smoke(**common, **{"parallel.strategy": "pmap"}), tmp_path / "pmap8")
    setup = runs.build(smoke(**common))
    initial = params_of(setup.family.init(*setup.init_args))
    p_one = params_of(one)
    assert {k.split("/")[0] for k in p_one} == {"swap", "patch_d", "code_d"}
    moved = {k.split("/")[0] for k in p_one if not np.allclose(initial[k], p_one[k])}
    assert moved == {"swap", "patch_d", "code_d"}, f"training moved only {moved}"
    for other in (jit8, pmap8):
        assert_params_close(p_one, params_of(other), rtol=1e-3, atol=1e-5)
        assert_params_close(params_of({"params": one["ema"]}), params_of({"params": other["ema"]}), rtol=1e-3, atol=1e-5)


@pytest.mark.slow  # trains a run first (about 35 s); the fast step stays under 15 min
def test_fine_tuning_starts_from_the_pretrained_export_with_the_inter_reinitialised(tmp_path):
    from train import export, trainer

    trainer.train(smoke(**{"eval_every": 0, "preview_every": 0}), tmp_path / "pretrain")
    path = export.export_run(tmp_path / "pretrain")
    start = pretrained.load(path).params
    setup = runs.build(smoke(**{"swap.init_from": str(path), "swap.reinit": ("inter",)}))
    params = setup.family.init(*setup.init_args)["params"]["swap"]
    for part in ("encoder", "decoder_src", "decoder_dst"):
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), params[part], start[part])
    scratch = runs.build(smoke())
    fresh = scratch.family.init(*scratch.init_args)["params"]["swap"]["inter"]
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), params["inter"], fresh)
    assert not np.allclose(jax.tree.leaves(params["inter"])[0], jax.tree.leaves(start["inter"])[0])

    with pytest.raises(config_lib.ConfigError, match="ae_dims=32 .config has 48"):
        runs.build(smoke(**{"swap.init_from": str(path), "model.ae_dims": 48}))
    with pytest.raises(config_lib.ConfigError, match="parts: decoder_dst, decoder_src, encoder, inter"):
        runs.build(smoke(**{"swap.init_from": str(path), "swap.reinit": ("inter_AB",)}))


def test_identity_report_recognises_real_people_and_their_copies(shared_data):
    """Real frames stand in for swaps: B's own frames as a perfect-identity A->B, A's as B->A."""
    import imageio.v3 as iio

    try:
        from data.faces import dlib_models

        dlib_models.load_models()
    except ImportError as e:
        pytest.skip(str(e))
    grid = shared_data / "grid"

    def frames(name, indices):
        return np.stack([iio.imread(grid / name, index=i) for i in indices])

    images = {"a": frames("bbaf2n.mpg", (0, 30)), "b": frames("lbax4n.mpg", (0, 30)),
              "a2b": frames("lbax4n.mpg", (15, 60)), "b2a": frames("bbaf2n.mpg", (15, 60))}
    report = swap.identity_report(images)
    for name in ("a2b", "b2a"):
        assert report[f"{name}_detect_rate"] == 1.0 and report[f"{name}_num_faces"] == 2
        assert report[f"{name}_id_retrieval"] == 1.0 and report[f"{name}_copy_id_retrieval"] == 0.0
        assert report[f"{name}_closer_to_target"] == 1.0 and report[f"{name}_copy_closer_to_target"] == 0.0
        assert report[f"{name}_target_l2"] < 0.6 < report[f"{name}_source_l2"]
        assert 0.0 < report[f"{name}_expression_error"] < 0.5
