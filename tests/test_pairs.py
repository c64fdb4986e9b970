"""data.pairs: A and B side by side, with the ground-truth swaps of synthetic people."""
import numpy as np
import pytest

from data import pairs, sources
from data import synthetic as S


def _pair(split="test", n=5, size=32):
    a = sources.get_source(f"synthetic_faces:ids=0;n={n};size={size};seed=0", split)
    b = sources.get_source(f"synthetic_faces:ids=7;n={n + 2};size={size};seed=1", split)
    return a, b, pairs.PairedSource(a, b)


def test_pairs_hold_both_sides_prefixed_and_stop_at_the_shorter():
    a, b, paired = _pair()
    assert len(paired) == 5 and paired.info.image_shape == (32, 32, 3)
    example = paired[3]
    np.testing.assert_array_equal(example["a_image"], a[3]["image"])
    np.testing.assert_array_equal(example["b_image"], b[3]["image"])
    assert {"a_label", "b_label", "a_pose", "b_expression"} <= set(example)
    with pytest.raises(IndexError):
        paired[5]


def test_ground_truth_is_the_other_person_with_this_expression_and_pose():
    a, b, paired = _pair()
    ex = paired[2]
    e_a, q_a = S._indexed_expression_pose(0, "test", np.array([2]))
    e_b, q_b = S._indexed_expression_pose(1, "test", np.array([2]))
    np.testing.assert_array_equal(ex["a2b_truth"], S.render([S.identity(7)], e_a, q_a, 32)[0])
    np.testing.assert_array_equal(ex["b2a_truth"], S.render([S.identity(0)], e_b, q_b, 32)[0])
    face = S.face_mask([S.identity(7)], e_a, q_a, 32)[0]
    np.testing.assert_allclose(ex["a2b_face"][..., 0] / 255.0, face, atol=0.5 / 255 + 1e-6)
    assert ex["b2a_face"].shape == (32, 32, 1) and ex["b2a_face"].dtype == np.uint8
    assert not np.array_equal(ex["a2b_truth"], ex["b_image"])


def test_no_ground_truth_for_several_identities_or_other_sources():
    a = sources.get_source("synthetic_faces:ids=0,1;n=2;size=32")
    b = sources.get_source("synthetic_faces:ids=2;n=4;size=32")
    assert "a2b_truth" not in pairs.PairedSource(a, b)[0]
    digits = sources.get_source("digits")
    assert "a2b_truth" not in pairs.PairedSource(digits, digits)[0]


def test_mismatched_sizes_are_refused_with_the_fix():
    a = sources.get_source("synthetic_faces:ids=0;n=2;size=32")
    b = sources.get_source("synthetic_faces:ids=1;n=2;size=64")
    with pytest.raises(ValueError, match="data.resolution"):
        pairs.PairedSource(a, b)
