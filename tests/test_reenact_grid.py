"""The animation grid: frame choice, pairing, rows against the rendered truth, layout, provenance, the verb on a run."""
import numpy as np
import pytest

from data import provenance, sources
from train import reenact_grid
from train.metrics import reenact as reenact_metrics
from zoo.errors import ConfigError

CLIPS = "synthetic_clips:ids=0-2;clips=1;frames=6;size=32;seed=0"


def _clips():
    source = sources.get_source(CLIPS, "test")
    return source, reenact_metrics.clips_of(source)


def _driving_copied(source, driving, mode):
    del source, mode
    return driving


def test_frame_positions_span_the_clip_and_shrink_for_short_clips():
    np.testing.assert_array_equal(reenact_grid.frame_positions(32, 8), [0, 4, 9, 13, 18, 22, 27, 31])
    np.testing.assert_array_equal(reenact_grid.frame_positions(3, 8), [0, 1, 2])
    with pytest.raises(ConfigError, match="at least 2"):
        reenact_grid.frame_positions(32, 1)


def test_pairs_join_different_people_and_take_people_in_turn():
    _, clips = _clips()
    pairs = reenact_grid.pairs_of(clips, 3)
    assert [clips[i].label for i, _ in pairs] == [0, 1, 2]
    assert all(clips[i].label != clips[j].label for i, j in pairs)


def test_rows_hold_the_driving_clip_the_rendered_truth_and_the_model_after_the_source():
    source, clips = _clips()
    x, y = clips[0], clips[1]
    rows = reenact_grid.pair_rows(_driving_copied, x, y, 3, "relative", reenact_metrics.frame_source(source))
    assert list(rows) == ["driving", "truth", "model"]
    take = [0, 2, 5]  # round(linspace(0, 5, 3)) = 0, 2.5 -> 2 (half to even), 5
    np.testing.assert_array_equal(rows["driving"][1:], y.frames[take])
    np.testing.assert_array_equal(rows["model"][1:], y.frames[take])  # what the fake model returned
    np.testing.assert_array_equal(rows["model"][0], x.frames[0])
    assert (rows["driving"][0] == 255).all() and (rows["truth"][0] == 255).all()
    # relative mode's truth at the driving clip's first frame is X's source frame itself (no motion yet)
    np.testing.assert_array_equal(rows["truth"][1], x.frames[0])
    assert not np.array_equal(rows["truth"][2], x.frames[0])  # and then it moves with Y
    absolute = reenact_grid.pair_rows(_driving_copied, x, y, 3, "absolute", reenact_metrics.frame_source(source))
    assert not np.array_equal(absolute["truth"][1], x.frames[0])  # Y's own pose at frame 0, not X's


def test_rows_without_a_truth_for_real_footage_and_bad_modes_named():
    _, clips = _clips()
    rows = reenact_grid.pair_rows(_driving_copied, clips[0], clips[1], 4, "absolute")
    assert list(rows) == ["driving", "model"] and rows["model"].shape == (5, 32, 32, 3)
    with pytest.raises(ConfigError, match="--mode 'sideways'"):
        reenact_grid.pair_rows(_driving_copied, clips[0], clips[1], 4, "sideways")


def test_the_figure_lays_rows_out_after_their_labels_and_carries_provenance(tmp_path):
    _, clips = _clips()
    rows = reenact_grid.pair_rows(_driving_copied, clips[0], clips[1], 4, "absolute")
    image = reenact_grid.labelled(list(rows.items()))
    assert image.shape == (2 * 33, reenact_grid.LABEL_PX + 5 * 33, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[33:65, reenact_grid.LABEL_PX:reenact_grid.LABEL_PX + 32], clips[0].frames[0])
    assert (image[:, :reenact_grid.LABEL_PX] < 128).any()  # the row names are drawn
    path = reenact_grid.write(tmp_path / "grid.png", image, {"Kind": "reenactment animation grid"})
    chunks = provenance.read_provenance(path)
    assert chunks["Description"] == provenance.NOTICE and chunks["Kind"] == "reenactment animation grid"
    with pytest.raises(ConfigError, match="name a .png file"):
        reenact_grid.write(tmp_path / "grid.jpg", image, {})


@pytest.mark.slow  # a one-step run of the smoke config: compiling its step takes a minute on 2 busy cores
def test_the_verb_draws_a_trained_runs_held_out_people(tmp_path, capsys):
    from train import config as config_lib
    from train import trainer

    config = config_lib.load("configs/reenact_fomm_synthetic.py:smoke")
    config.total_steps, config.checkpoint.every, config.eval_every, config.preview_every = 1, 1, 0, 0
    trainer.train(config, tmp_path / "run")
    out = tmp_path / "figs" / "grid.png"
    assert reenact_grid.main(["--workdir", str(tmp_path / "run"), "--out", str(out), "--pairs", "2",
                              "--frames", "4"]) == 0
    assert "video 0 (label 0) by video 1 (label 1); video 1 (label 1) by video 2 (label 2)" in capsys.readouterr().out
    chunks = provenance.read_provenance(out)
    assert chunks["Step"] == "1" and "rows driving, truth, model" in chunks["Layout"]
    with provenance.Image.open(out) as image:
        assert image.size == (reenact_grid.LABEL_PX + 5 * 65, 2 * 3 * 65)
