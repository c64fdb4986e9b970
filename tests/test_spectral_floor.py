"""benchmarks/spectral_floor: the spectral detectors fitted on a detect config's training split find a planted trace."""
import json

import numpy as np

from benchmarks import spectral_floor


def _smooth_faces(rng: np.random.Generator, n: int) -> np.ndarray:
    """Low-frequency uint8 images: random 4x4 grids upsampled to 32x32."""
    coarse = rng.uniform(40, 215, size=(n, 4, 4, 3))
    return np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2).astype(np.uint8)


def _split(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n reals, then the same images with a period-2 checkerboard of +-12 added: an upsampling layer's trace."""
    reals = _smooth_faces(rng, n)
    yy, xx = np.mgrid[:32, :32]
    checker = (12 * (-1.0) ** (yy + xx))[None, :, :, None]
    fakes = np.clip(reals + checker, 0, 255).astype(np.uint8)
    return np.concatenate([reals, fakes]), np.repeat([0, 1], n)


def test_the_floor_fits_on_the_training_split_and_finds_a_periodic_trace_on_the_test_split(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x_train, y_train = _split(rng, 60)
    x_test, y_test = _split(rng, 40)
    npz = tmp_path / "data.npz"
    np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    out = tmp_path / "floor.json"
    spectral_floor.main(["--config", "configs/detect_swap_synthetic.py:smoke", "--set", f"data.source=npz:{npz}",
                         "--set", f"data.eval_source=npz:{npz}", "--json", str(out)])
    result = json.loads(out.read_text())
    assert (result["train_images"], result["train_fakes"], result["test_images"], result["test_fakes"]) == (120, 60, 80, 40)
    for name in ("durall", "frank"):
        row = result[name]
        assert row["num_real"] == row["num_fake"] == 40
        assert row["auc"] == 1.0 and row["tpr@5%fpr"] == 1.0, (name, row)
    assert "frank: auc 1.000" in capsys.readouterr().out
