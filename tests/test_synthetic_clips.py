"""data.synthetic clips: smooth, seeded talking-face trajectories and the exact reenactment truth."""
import numpy as np
import pytest

from data import synthetic as S
from zoo.errors import DataError

# Largest keyframe-to-keyframe change of each field: the width of its range in the still faces' distribution.
_EXPRESSION_RANGE = np.array([1.0, 2.0, 1.0, 2.0])
_POSE_RANGE = np.array([20.0, 2.0, 0.16, 0.12, 0.2, 360.0, 0.3])


def _clips(spec="ids=3,8;clips=2;frames=25;size=32;spacing=6", split="train"):
    return S.clips_from_spec(spec, split)


def _eased(values: np.ndarray, spacing: int) -> np.ndarray:
    """Half-cosine easing between the values at frames 0, spacing, 2*spacing, ...: the written-out formula."""
    out = np.empty_like(values, dtype=np.float64)
    for t in range(len(values)):
        k, r = divmod(t, spacing)
        if r == 0:
            out[t] = values[t]
            continue
        a, b = values[k * spacing].astype(np.float64), values[(k + 1) * spacing].astype(np.float64)
        out[t] = a + (b - a) * 0.5 * (1.0 - np.cos(np.pi * r / spacing))
    return out


def test_trajectories_ease_through_their_keyframes_and_stay_in_range():
    spacing, frames = 6, 37  # the last frame is a pose keyframe (pose keys lie 18 frames apart)
    e, q = S.clip_expression_pose(0, "train", 5, 1, frames, spacing)
    ev, qv = e.vector().astype(np.float64), q.vector().astype(np.float64)
    np.testing.assert_allclose(ev, _eased(ev, spacing), atol=2e-6)
    np.testing.assert_allclose(qv, _eased(qv, 3 * spacing), rtol=1e-6, atol=2e-5)
    steps_e, steps_q = np.abs(np.diff(ev, axis=0)), np.abs(np.diff(qv, axis=0))
    assert (steps_e <= np.pi / 2 * _EXPRESSION_RANGE / spacing + 1e-6).all()
    assert (steps_q <= np.pi / 2 * _POSE_RANGE / (3 * spacing) + 1e-5).all()
    # C1 at keyframes: the second difference there is as small as inside a segment, not a kink.
    bend_e = np.abs(np.diff(ev, n=2, axis=0))
    assert (bend_e <= np.pi**2 / 2 * _EXPRESSION_RANGE / spacing**2 + 1e-6).all()
    assert 0 <= ev[:, 0].min() and ev[:, 0].max() <= 1 and 0 <= ev[:, 2].min() and ev[:, 2].max() <= 1
    assert (np.abs(ev[:, [1, 3]]) <= 1).all() and (np.abs(qv[:, 0]) <= 10 + 1e-4).all()
    assert (np.ptp(qv[:, 5:], axis=0) == 0).all(), "one clip has one light"
    assert np.ptp(ev[:, 0]) > 0.05 and np.ptp(qv[:, 0]) > 0.5, "the person talks and moves"


def test_frames_of_a_clip_change_less_than_frames_of_different_clips():
    clips = _clips()
    images = clips.gather(np.arange(len(clips)))["image"].astype(np.float64)
    video = clips.gather(np.arange(len(clips)))["video"]
    within = np.abs(np.diff(images[video == 0], axis=0)).mean()
    across = np.abs(images[video == 0] - images[video == 1]).mean()
    assert within < across / 3


def test_clips_are_deterministic_and_independent_of_the_other_people_and_the_reading_order():
    a, b = _clips(), _clips()
    np.testing.assert_array_equal(a.gather(np.arange(len(a)))["image"], b.gather(np.arange(len(b)))["image"])
    alone = S.SyntheticClips([8], clips=2, frames=25, size=32, spacing=6, cache_bytes=0)  # renders on each read
    np.testing.assert_array_equal(alone.clip(1)[1].vector(), a.clip(3)[1].vector())  # person 8's clip 1
    order = np.array([40, 3, 49, 3, 0])
    np.testing.assert_array_equal(alone.gather(order)["image"], np.stack([a[i + 50]["image"] for i in order]))
    other_seed = _clips("ids=3,8;clips=2;frames=25;size=32;spacing=6;seed=1")
    assert not np.array_equal(other_seed.clip(0)[0].vector(), a.clip(0)[0].vector())


def test_fields_say_which_person_clip_and_frame_an_example_is():
    clips = _clips()
    assert len(clips) == 2 * 2 * 25 and clips.num_videos == 4 and clips.info.name == "synthetic_clips"
    batch = clips.gather(np.arange(len(clips)))
    i = np.arange(len(clips))
    np.testing.assert_array_equal(batch["video"], i // 25)
    np.testing.assert_array_equal(batch["frame"], i % 25)
    np.testing.assert_array_equal(batch["label"], i // 50)
    np.testing.assert_array_equal(clips.frame_index, np.stack([i // 25, i % 25], 1))
    assert batch["video"].dtype == batch["frame"].dtype == np.int64
    e, q = clips.clip(2)
    np.testing.assert_array_equal(batch["pose"][50:75], q.vector())
    np.testing.assert_array_equal(batch["expression"][50:75], e.vector())
    assert clips.video_label(2) == 1 and clips.clip_indices(3).tolist() == list(range(75, 100))
    with pytest.raises(IndexError):
        clips.clip(4)


def test_train_and_test_hold_different_trajectories_and_all_is_both():
    train, test, both = (_clips(split=s) for s in ("train", "test", "all"))
    train_rows = np.concatenate([train.clip(v)[1].vector() for v in range(train.num_videos)])
    test_rows = np.concatenate([test.clip(v)[1].vector() for v in range(test.num_videos)])
    shared = (train_rows[:, None, :5] == test_rows[None, :, :5]).all(-1)
    assert not shared.any(), "no test frame repeats a train frame's pose"
    assert both.num_videos == 8
    np.testing.assert_array_equal(both.gather([5, 100 + 7])["image"], np.stack([train[5]["image"], test[7]["image"]]))
    assert both[100 + 7]["video"] == 4 + 0 and both[100 + 7]["label"] == 0


def test_truth_of_a_person_driven_by_their_own_clip_is_their_clip():
    clips = _clips()
    for video in (0, 3):
        own = clips.gather(clips.clip_indices(video))["image"]
        np.testing.assert_array_equal(clips.truth(clips.video_label(video), video), own)
    e, q = clips.clip(1)
    np.testing.assert_array_equal(S.reenact_truth(S.identity(3), (e, q), 32),
                                  clips.gather(clips.clip_indices(1))["image"])


def test_truth_of_a_person_driven_by_another_clip_shows_that_person_in_that_motion():
    clips = _clips()
    x_frames = clips.gather(clips.clip_indices(0))["image"]  # person 3, clip 0
    y_frames = clips.gather(clips.clip_indices(2))["image"]  # person 8, clip 0
    truth = clips.truth(0, 2)
    assert truth.shape == (25, 32, 32, 3) and truth.dtype == np.uint8
    assert (np.abs(truth.astype(int) - x_frames).reshape(25, -1).max(1) > 30).all()
    assert (np.abs(truth.astype(int) - y_frames).reshape(25, -1).max(1) > 30).all()
    np.testing.assert_array_equal(truth[:, 0, 0], x_frames[:, 0, 0])  # X's backdrop, not Y's
    assert not np.array_equal(y_frames[:, 0, 0], x_frames[:, 0, 0])
    assert (np.abs(np.diff(truth.astype(int), axis=0)).reshape(24, -1).max(1) > 0).sum() >= 20, "the truth moves"


def test_truth_can_keep_the_source_frames_light():
    clips = _clips()
    _, x_pose = clips.clip(0)
    kept = clips.truth(0, 2, lighting=x_pose[0])
    e, q = clips.clip(2)
    rows = q.vector()
    rows[:, 5:] = x_pose.vector()[0, 5:]
    np.testing.assert_array_equal(kept, S.render([S.identity(3)] * 25, e, S.Pose.from_vector(rows), 32))
    assert not np.array_equal(kept, clips.truth(0, 2))
    np.testing.assert_array_equal(clips.truth(0, 0, lighting=x_pose[7]), clips.truth(0, 0))


@pytest.mark.parametrize("spec, fix", [
    ("ids=0;frames=1", "at least 2 frames"),
    ("ids=0;clips=0", "at least 1 clip"),
    ("ids=0;spacing=0", "spacing=8"),
    ("ids=0;masks=2", "masks must be 0 or 1"),
    ("ids=0;frame=4", "valid keys: ids, clips, frames"),
    ("ids=0;frames=ten", "expected integers"),
    ("ids=0;frames", "needs a value, as in frames=32"),
])
def test_bad_specs_name_the_fix(spec, fix):
    with pytest.raises(DataError, match=fix):
        S.clips_from_spec(spec, "train")
