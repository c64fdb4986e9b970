"""benchmarks/detect_matrix: one cell per (trained on, tested on) pair, spectral fits that separate a toy, atomic JSON."""
import json
import os

import chex
import numpy as np
import pytest

from benchmarks import detect_matrix as dm
from zoo.errors import ConfigError

ROW_KEYS = {"auc", "ap", "acc", "tpr@1%fpr", "tpr@5%fpr", "num_real", "num_fake"}
TINY = ("batch_size=8", "eval.batch_size=16", "parallel.num_devices=1", "data.worker_count=0", "resnet:model.stages=1,1", "resnet:model.widths=4,8")


def _swaps(per_person: int = 1) -> list[dm.Generator]:
    return dm.select(dm.all_generators((), (per_person, per_person), (8, 8)),
                     f"{dm.SWAP}/a2b,{dm.SWAP}/b2a")


@pytest.mark.slow  # 10-20 s each: the fast step stays under 15 min on 2 cores
def test_a_tiny_run_has_one_detection_row_per_trained_and_tested_generator():
    generators = _swaps()
    names = [g.name for g in generators]
    out = dm.run(generators, ["resnet", "durall"], steps=2, overrides=TINY)
    assert list(out) == ["synthetic_faces"]
    group = out["synthetic_faces"]
    # 40 training people, one image each, and persons 0 and 1 with 5 each; 20 test people and 0 and 1 with 2 each;
    # one fake per real
    for name in names:
        counts = {k: v for k, v in group["generators"][name].items() if k not in ("train", "test")}
        assert counts == {"train_images": 100, "train_fakes": 50, "test_images": 48, "test_fakes": 24}
    assert set(group["matrices"]) == {"resnet", "durall"}
    for detector, result in group["matrices"].items():
        assert result["trained_on"] == result["tested_on"] == names
        auc = np.asarray(result["auc"])
        chex.assert_shape(auc, (2, 2))
        assert ((auc >= 0) & (auc <= 1)).all()
        assert set(result["cells"]) == set(names) and set(result["seconds"]) == set(names)
        for i, row in enumerate(names):
            assert set(result["cells"][row]) == set(names)
            for j, col in enumerate(names):
                cell = result["cells"][row][col]
                assert ROW_KEYS <= set(cell), (detector, row, col)
                assert cell["num_real"] == cell["num_fake"] == 24 and cell["auc"] == auc[i, j]
        assert result["in_domain_auc"] == pytest.approx(np.mean(np.diag(auc)))
        assert result["cross_auc"] == pytest.approx((auc[0, 1] + auc[1, 0]) / 2)
    assert group["matrices"]["resnet"]["steps"] == 2 and group["matrices"]["durall"]["steps"] is None


def test_the_columns_share_their_test_reals_and_differ_in_their_fakes():
    a2b, b2a = (dm.materialize(g) for g in _swaps())
    np.testing.assert_array_equal(a2b.test_x[a2b.test_y == 0], b2a.test_x[b2a.test_y == 0])
    assert not np.array_equal(a2b.test_x[a2b.test_y == 1], b2a.test_x[b2a.test_y == 1])


def _toy(kind: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random images (real) and the same plus a high-frequency pattern (fake), label 1 = fake."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(60, 190, size=(n, 4, 4, 1))
    real = np.kron(coarse, np.ones((1, 8, 8, 1)))  # piecewise constant 32 px images: little high-frequency energy
    y, x = np.mgrid[:32, :32]
    pattern = np.where((x + y) % 2, 25.0, -25.0) if kind == "checker" else np.where(x % 4 < 2, 25.0, -25.0)
    fake = real + pattern[None, :, :, None]
    images = np.clip(np.concatenate([real, fake]), 0, 255).astype(np.uint8)
    return images, np.repeat([0, 1], n)


@pytest.mark.parametrize("detector", dm.SPECTRAL)
def test_spectral_detectors_separate_an_easy_toy_on_the_diagonal(detector):
    data = {kind: dm.Data(*_toy(kind, 40, 0), *_toy(kind, 30, 1)) for kind in ("checker", "stripes")}
    result = dm.matrix(dm.Group("toy", "", 32), detector, data)
    chex.assert_shape(np.asarray(result["auc"]), (2, 2))
    assert np.diag(result["auc"]).tolist() == [1.0, 1.0]
    assert result["in_domain_auc"] == 1.0


def test_an_unknown_or_left_out_generator_is_refused_with_the_choices():
    generators = dm.all_generators((), (1, 1), (8, 8))
    with pytest.raises(ConfigError, match="dcgan_fashion_mnist") as error:
        dm.select(generators, "vae_mnist")
    assert "28 px" in str(error.value)
    with pytest.raises(ConfigError, match="NAME=EXPORT"):
        dm.all_generators(("liae",), (1, 1), (8, 8))


def test_the_json_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "matrix.json"
    args = ["--detector", "durall", "--generators", f"{dm.SWAP}/a2b", "--faces-per-person", "1,1", "--json", str(path)]
    dm.main(args)
    written = json.loads(path.read_text())
    assert written["settings"]["detectors"] == ["durall"] and written["reference"]["xception_celebdf_v2_auc"] == 0.737
    assert written["groups"]["synthetic_faces"]["matrices"]["durall"]["auc"][0][0] > 0.9
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("killed before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        dm.main(args)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["matrix.json"]


def test_a_cnn_trains_with_its_groups_detect_config_and_only_the_named_detectors_overrides(tmp_path):
    from train import config as config_lib

    recipe = config_lib.load(str(dm.ROOT / "configs/detect_gan_fashion_mnist.py"))
    config = dm.cnn_config(dm.FASHION, "xception", 0, tmp_path / "d.npz", ("resnet:model.widths=4,8", "xception:model.width=4"))
    assert config.total_steps == recipe.total_steps and config.optim.learning_rate == recipe.optim.learning_rate
    assert config.model.name == "xception_detector" and config.model.input_size == 32 and config.model.width == 4
    assert config.data.source == config.data.eval_source == f"npz:{tmp_path / 'd.npz'}"
    assert config.checkpoint.every == config.preview_every == 0 and tuple(config.detect.sweep) == ()
    assert dm.cnn_config(dm.FASHION, "resnet", 7, tmp_path / "d.npz", ("batch_size=16",)).total_steps == 7
