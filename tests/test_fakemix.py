"""fakemix: real images beside the fakes a pretrained model makes of them, split by identity."""
import chex
import jax
import numpy as np
import pytest

from data import fakemix, sources
from zoo import errors, fake_makers, pretrained

SWAP = "swap_df_synthetic_narrow"
REAL = "synthetic_faces:ids=2-3;n=3;size=64;seed=0"


@pytest.fixture(scope="module")
def mix():
    return sources.get_source(f"fakemix:model={SWAP};seed=4@{REAL}", "train")


def test_each_real_image_is_followed_by_its_swaps_made_by_the_model(mix):
    real = sources.get_source(REAL, "train")
    module, variables = pretrained.create(SWAP)
    assert len(mix) == 3 * len(real) and mix.info.num_classes == 2
    batch = mix.gather(np.arange(len(mix)))
    np.testing.assert_array_equal(batch["label"], np.tile([0, 1, 1], len(real)))
    np.testing.assert_array_equal(batch["generator"], np.tile([0, 1, 2], len(real)))
    np.testing.assert_array_equal(batch["pair"], np.repeat(np.arange(len(real)), 3))
    reals = real.gather(np.arange(len(real)))["image"]
    np.testing.assert_array_equal(batch["image"][0::3], reals)
    x = reals.astype(np.float32) / 255.0
    for slot, direction in ((1, "a2b"), (2, "b2a")):
        want = np.asarray(module.apply(variables, x, direction, method=module.swap)[0]) * 255.0
        got = batch["image"][slot::3].astype(np.float32)
        assert np.max(np.abs(got - want)) <= 0.5 + 1e-3, direction  # rounding to uint8 only
    assert mix.generators == ("real", f"{SWAP}/a2b", f"{SWAP}/b2a")


def test_fakes_keep_the_identity_seed_of_the_person_they_were_made_from(mix):
    batch = mix.gather(np.arange(len(mix)))
    np.testing.assert_array_equal(batch["identity"], np.repeat([2, 2, 2, 3, 3, 3], 3))
    assert mix[4]["identity"] == 2 and mix[4]["label"] == 1


def test_gan_fakes_are_drawn_per_example_whatever_the_batching():
    module, variables = pretrained.create("dcgan_fashion_mnist")
    maker = fake_makers.fake_maker(module, variables, "sample")
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(np.arange(6))
    images = np.zeros((6, 32, 32, 1), np.float32)
    whole = maker(images, keys)
    chex.assert_shape(whole, (6, 32, 32, 1))
    assert float(whole.min()) >= 0.0 and float(whole.max()) <= 1.0
    chex.assert_trees_all_close(maker(images[:2], keys[:2]), whole[:2], atol=1e-5)
    z = jax.vmap(lambda k: jax.random.normal(k, (module.latent_dim,)))(keys)
    chex.assert_trees_all_close(whole, np.clip((np.asarray(module.apply(variables, z)) + 1) / 2, 0, 1), atol=1e-5)


def test_vae_reconstructions_decode_the_posterior_mean():
    module, variables = pretrained.create("vae_mnist")
    maker = fake_makers.fake_maker(module, variables, "reconstruction")
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    mean = module.apply(variables, x, method=module.encode)[0]
    want = jax.nn.sigmoid(module.apply(variables, mean, method=module.decode))  # bernoulli likelihood's mean
    chex.assert_trees_all_close(maker(x, jax.random.split(jax.random.key(0), 3)), want, atol=1e-6)


@pytest.mark.parametrize("spec, message", [
    (f"fakemix:model={SWAP}", "names no real source"),
    (f"fakemix:kinds=a2b@{REAL}", "names no model"),
    (f"fakemix:model={SWAP};colour=1@{REAL}", "is not one of"),
    (f"fakemix:model={SWAP};seed=x@{REAL}", "must be integers"),
    (f"fakemix:model={SWAP};kinds=sample@{REAL}", "not 'sample'"),
    (f"fakemix:model=dcgan_fashion_mnist@{REAL}", "makes (32, 32, 1) images"),
])
def test_bad_specs_are_refused_with_the_fix(spec, message):
    with pytest.raises(errors.DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sources.get_source(spec, "train")


def test_the_detection_configs_split_people_apart():
    from train import sections

    for name in ("detect_swap_synthetic.py",):
        config = sections.load(f"configs/{name}")
        train_ids = _seeds(config.data.source)
        test_ids = _seeds(config.data.eval_source)
        # The swap model's own people are in both (every fake wears their faces); nobody else is.
        assert {0, 1} <= train_ids & test_ids and train_ids & test_ids == {0, 1}
        assert len(train_ids) == 42 and len(test_ids) == 22


def _seeds(spec: str) -> set[int]:
    parts = spec.partition("@")[2].split(" + ")
    return {int(s) for real in parts for s in sources.get_source(real, "test").identity_seeds}


def test_one_mix_is_built_per_spec_and_split():
    spec = f"model={SWAP}@{REAL}"
    assert fakemix.from_spec(spec, "train", sources.get_source) is fakemix.from_spec(spec, "train", sources.get_source)


def test_joined_real_specs_keep_synthetic_people_apart():
    """" + "-joined synthetic parts: each person keeps their seed; stills carry no video."""
    two = sources.get_source(f"fakemix:model={SWAP};kinds=a2b@synthetic_faces:ids=7;n=2;size=64 + "
                             "synthetic_faces:ids=9;n=3;size=64", "test")
    batch = two.gather(np.arange(len(two)))
    assert len(two) == 2 * (2 + 3) and "video" not in batch
    np.testing.assert_array_equal(batch["identity"], [7, 7, 7, 7, 9, 9, 9, 9, 9, 9])
    np.testing.assert_array_equal(batch["label"], [0, 1] * 5)
    alone = sources.get_source("synthetic_faces:ids=9;n=3;size=64", "test").gather(np.arange(3))["image"]
    np.testing.assert_array_equal(batch["image"][4::2], alone)


def test_parts_with_videos_give_one_video_per_clip_and_kind(shared_data):
    grid = [f"aligned:{shared_data}/grid/{s}.mpg;size=64;every=25" for s in ("bbaf2n", "lbax4n")]
    mix = sources.get_source(f"fakemix:model={SWAP}@{' + '.join(grid)}", "all")
    batch = mix.gather(np.arange(len(mix)))
    per_part = len(mix) // 2
    np.testing.assert_array_equal(batch["identity"], np.repeat([0, 1], per_part))
    videos = batch["video"].reshape(2, -1, 3)  # part, real image, slot
    assert (videos == videos[:, :1, :]).all()  # one video per part and slot
    assert len(np.unique(batch["video"])) == 6
