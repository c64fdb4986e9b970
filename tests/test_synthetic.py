"""Synthetic faces render what their parameters say at any size, and the source serves them reproducibly."""

import pickle

import chex
import numpy as np
import pytest

from data import synthetic as S
from data.sources import Source, SourceInfo


def _batch(n: int, seed: int = 0) -> tuple[list[S.Identity], S.Expression, S.Pose]:
    """n different people with random expressions and poses."""
    expressions, poses = S.random_expression_pose(np.random.default_rng(seed), n)
    return [S.identity(i) for i in range(n)], expressions, poses


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_shapes_and_dtypes(size):
    ids, e, q = _batch(3)
    images = S.render(ids, e, q, size)
    chex.assert_shape(images, (3, size, size, 3))
    assert images.dtype == np.uint8
    for mask in (S.face_mask(ids, e, q, size), S.eyes_mouth_mask(ids, e, q, size)):
        chex.assert_shape(mask, (3, size, size))
        assert mask.dtype == np.float32
    assert S.render([], e[:0], q[:0], size).shape == (0, size, size, 3)


def test_same_face_at_two_resolutions():
    ids, e, q = _batch(8, seed=1)
    small = S.render(ids, e, q, 64).astype(np.float32)
    large = S.render(ids, e, q, 128).astype(np.float32)
    down = large.reshape(8, 64, 2, 64, 2, 3).mean(axis=(2, 4))
    error = np.abs(small - down)
    assert error.mean() < 1.5
    assert np.mean(error > 32) < 0.01


def test_cropped_rendering_matches_full_frame():
    ids, e, q = _batch(12, seed=2)
    extreme = S.Pose(
        roll=[-10, 10] * 6,
        yaw=[1, -1] * 6,
        shift_x=[0.08, -0.08] * 6,
        shift_y=[-0.06, 0.06] * 6,
        scale=[0.9, 1.1] * 6,
        light_angle=0.0,
        light_strength=0.3,
    )
    wide = S.Expression(mouth_open=1.0, smile=[1, -1] * 6, eye_open=1.0, brow_raise=[1, -1] * 6)
    for expressions, poses in ((e, q), (wide, extreme)):
        np.testing.assert_array_equal(
            S.render(ids, expressions, poses, 48), S.render(ids, expressions, poses, 48, _crop=False)
        )


def test_identities_are_far_apart_compared_with_expression_and_pose():
    k, m = 10, 6
    expressions, poses = S.random_expression_pose(np.random.default_rng(3), m)
    images = np.stack([S.render([S.identity(i)] * m, expressions, poses, 64) for i in range(k)]).astype(np.float32)
    within = np.mean([np.abs(images[:, a] - images[:, b]).mean() for a in range(m) for b in range(a + 1, m)])
    between = [np.abs(images[a] - images[b]).mean() for a in range(k) for b in range(a + 1, k)]
    assert np.mean(between) > 3 * within
    assert min(between) > 1.5 * within


def test_identity_is_stable_and_consecutive_seeds_differ_in_palette_attributes():
    assert S.identity(7) == S.identity(7)
    a, b = S.identity(7), S.identity(8)
    assert a.hair_style != b.hair_style
    for colour in ("skin", "hair_colour", "iris", "background", "shirt"):
        assert np.abs(np.subtract(getattr(a, colour), getattr(b, colour))).max() > 20, colour
    assert {S.identity(i).hair_style for i in range(len(S.HAIR_STYLES))} == set(range(len(S.HAIR_STYLES)))


def test_swap_ground_truth_is_b_rendered_with_a_expression_and_pose():
    _, e, q = _batch(5, seed=4)
    a, b = S.identity(0), S.identity(1)
    swapped = S.swap_ground_truth(b, (e, q), 64)
    np.testing.assert_array_equal(swapped, S.render([b] * 5, e, q, 64))
    assert np.abs(swapped.astype(int) - S.render([a] * 5, e, q, 64)).mean() > 10


def test_expression_changes_eyes_and_mouth_but_not_hair_or_background():
    n = len(S.HAIR_STYLES)
    ids = [S.identity(i) for i in range(n)]
    _, poses = S.random_expression_pose(np.random.default_rng(5), n)
    neutral = S.Expression.neutral(n)
    strong = S.Expression(mouth_open=1.0, smile=1.0, eye_open=0.0, brow_raise=1.0)[[0] * n]
    diff = np.abs(S.render(ids, neutral, poses, 64).astype(int) - S.render(ids, strong, poses, 64)).sum(-1)
    face = np.maximum(S.face_mask(ids, neutral, poses, 64), S.face_mask(ids, strong, poses, 64))
    regions = np.maximum(S.eyes_mouth_mask(ids, neutral, poses, 64), S.eyes_mouth_mask(ids, strong, poses, 64))
    assert diff[face == 0].max() == 0
    for k in range(n):
        assert diff[k][regions[k] > 0.5].mean() > 30, S.HAIR_STYLES[ids[k].hair_style]
        assert diff[k][face[k] == 0].size > 0.3 * 64 * 64


def test_masks_are_in_unit_range_and_eyes_mouth_within_face():
    ids, e, q = _batch(6, seed=6)
    face, regions = S.face_mask(ids, e, q, 64), S.eyes_mouth_mask(ids, e, q, 64)
    for mask in (face, regions):
        assert mask.min() >= 0 and mask.max() <= 1
    assert np.all(regions <= face)
    assert 0.02 < regions.mean() < face.mean() < 0.6


def test_random_expression_pose_is_seeded_and_in_range():
    e1, q1 = S.random_expression_pose(np.random.default_rng(9), 500)
    e2, q2 = S.random_expression_pose(np.random.default_rng(9), 500)
    np.testing.assert_array_equal(e1.vector(), e2.vector())
    np.testing.assert_array_equal(q1.vector(), q2.vector())
    chex.assert_shape([e1.vector(), q1.vector()], [(500, 4), (500, 7)])
    assert 0 <= e1.mouth_open.min() and e1.mouth_open.max() <= 1 and np.mean(e1.mouth_open == 0) > 0.2
    assert np.abs(e1.smile).max() <= 1 and np.mean(e1.eye_open < 0.2) > 0.05
    assert np.abs(q1.roll).max() <= 10 and np.abs(q1.yaw).max() <= 1
    np.testing.assert_array_equal(S.Pose.from_vector(q1.vector()).vector(), q1.vector())


def test_source_examples():
    source = S.SyntheticFaces([4, 9, 2], num_per_identity=5, size=32, seed=0, split="train")
    assert isinstance(source, Source)
    assert len(source) == 15
    assert source.info == SourceInfo("synthetic_faces", (32, 32, 3), 3, 15)
    example = source[7]
    assert set(example) == {"image", "label", "expression", "pose"}
    assert example["image"].dtype == np.uint8 and example["image"].shape == (32, 32, 3)
    assert isinstance(example["label"], np.int64) and example["label"] == 1
    assert example["expression"].dtype == np.float32 and example["expression"].shape == (len(S.EXPRESSION_FIELDS),)
    assert example["pose"].dtype == np.float32 and example["pose"].shape == (len(S.POSE_FIELDS),)
    assert [int(source[i]["label"]) for i in range(15)] == [i // 5 for i in range(15)]
    rerendered = S.render(
        [S.identity(9)], S.Expression.from_vector(example["expression"]), S.Pose.from_vector(example["pose"]), 32
    )
    np.testing.assert_array_equal(rerendered[0], example["image"])
    np.testing.assert_array_equal(source[-1]["image"], source[14]["image"])
    with pytest.raises(IndexError):
        source[15]


def test_source_gather_cache_and_pickle_agree():
    source = S.SyntheticFaces([0, 1], num_per_identity=20, size=32, seed=3, split="test")
    uncached = S.SyntheticFaces([0, 1], num_per_identity=20, size=32, seed=3, split="test", cache_bytes=0)
    indices = np.array([31, 2, 17, 2])
    batch = source.gather(indices)
    for k, i in enumerate(indices):
        for key in ("image", "label", "expression", "pose"):
            np.testing.assert_array_equal(batch[key][k], source[int(i)][key])
    np.testing.assert_array_equal(uncached.gather(indices)["image"], batch["image"])
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone[31]["image"], source[31]["image"])
    np.testing.assert_array_equal(
        source.swap([31, 2], label=0), S.swap_ground_truth(S.identity(0), source.expression_pose([31, 2]), 32)
    )


def test_source_is_deterministic_and_splits_differ():
    def make(split, seed=0):
        return S.SyntheticFaces([0, 1], num_per_identity=8, size=32, seed=seed, split=split)

    train, again, test, other_seed = make("train"), make("train"), make("test"), make("train", seed=1)
    np.testing.assert_array_equal(train.gather(range(16))["image"], again.gather(range(16))["image"])
    train_params = train.gather(range(16))["pose"]
    assert not np.any(np.all(train_params[:, None] == test.gather(range(16))["pose"][None], axis=-1))
    assert not np.array_equal(train_params, other_seed.gather(range(16))["pose"])
    assert not np.array_equal(train[0]["image"], test[0]["image"])
    everything = make("all")
    assert len(everything) == 32
    np.testing.assert_array_equal(everything.gather([3, 20])["image"], np.stack([train[3]["image"], test[4]["image"]]))
    assert everything[20]["label"] == 0 and everything[30]["label"] == 1


def test_from_spec():
    source = S.from_spec("ids=0-2,7; n=3;size=48;seed=5", "test")
    assert source.identity_seeds == (0, 1, 2, 7)
    assert (len(source), source.size, source.seed, source.split) == (12, 48, 5, "test")
    default = S.from_spec("", "train")
    assert (default.identity_seeds, default.num_per_identity, default.size, default.seed) == ((0, 1), 1000, 64, 0)
    with pytest.raises(ValueError, match="unknown key 'colour'.*valid keys: ids, n, size, seed"):
        S.from_spec("ids=0,1;colour=red", "train")
    with pytest.raises(ValueError, match="expected integers"):
        S.from_spec("n=lots", "train")
    with pytest.raises(ValueError, match="repeat"):
        S.from_spec("ids=1,1", "train")
    with pytest.raises(ValueError, match="split"):
        S.from_spec("", "validation")


def test_source_feeds_the_training_pipeline():
    from data.pipeline import make_dataset

    source = S.from_spec("ids=0,1;n=6;size=32", "train")
    batch = next(iter(make_dataset(source, global_batch_size=4, seed=0)))
    chex.assert_shape(
        [batch["image"], batch["label"], batch["expression"], batch["pose"]], [(4, 32, 32, 3), (4,), (4, 4), (4, 7)]
    )
    assert batch["image"].dtype == np.uint8


def test_masks_option_adds_face_and_eyes_mouth_masks_matching_the_mask_functions():
    source = S.from_spec("ids=3;n=6;size=48;masks=1", "test")
    assert "masks=True" in repr(source)
    batch = source.gather(np.arange(6))
    e, q = source.expression_pose(np.arange(6))
    people = [source.identities[0]] * 6
    for field, fn in (("mask", S.face_mask), ("em_mask", S.eyes_mouth_mask)):
        chex.assert_shape(batch[field], (6, 48, 48, 1))
        assert batch[field].dtype == np.uint8
        np.testing.assert_allclose(batch[field][..., 0] / 255.0, fn(people, e, q, 48), atol=0.5 / 255 + 1e-6)
        np.testing.assert_array_equal(source[2][field], batch[field][2])
    np.testing.assert_array_equal(batch["image"], S.from_spec("ids=3;n=6;size=48", "test").gather(np.arange(6))["image"])
    assert "mask" not in S.from_spec("ids=3;n=2;size=32", "train")[0]
    with pytest.raises(ValueError, match="masks must be 0 or 1"):
        S.from_spec("masks=2", "train")


def test_face_masks_gives_both_masks_in_one_pass():
    people = [S.identity(s) for s in (0, 3)]
    e, q = S.random_expression_pose(np.random.default_rng(5), 2)
    face, regions = S.face_masks(people, e, q, 40)
    np.testing.assert_array_equal(face, S.face_mask(people, e, q, 40))
    np.testing.assert_array_equal(regions, S.eyes_mouth_mask(people, e, q, 40))


def test_package_modules_have_one_job_each_and_import_siblings_not_the_package():
    """Each module says its job in a one-line docstring; none imports `data.synthetic` itself (a cycle)."""
    import ast
    import pathlib

    folder = pathlib.Path(S.__file__).parent
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), path.name
        if path.name == "__init__.py":
            continue
        assert len(ast.get_docstring(tree).splitlines()[0]) > 20, path.name
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "data.synthetic", f"{path.name} imports the package it belongs to"


def test_a_huge_identity_range_is_refused_before_it_is_built():
    from zoo.errors import DataError

    with pytest.raises(DataError, match="over 1,000,000 people"):
        S.from_spec("ids=0-99999999;n=1", "train")
