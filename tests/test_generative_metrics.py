"""The sample-quality protocol: quantisation, cached reference features, and the suite end to end in training."""
import json
import pathlib

import numpy as np
import pytest
import scipy.linalg

from train.metrics import generative
from train.metrics.features import Extractor

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _pixel_extractor(name: str = "pixels") -> Extractor:
    """Flattened pixels as features and a 2-way softmax as probs: an extractor whose outputs are obvious."""
    def apply(images: np.ndarray) -> dict[str, np.ndarray]:
        feats = images.reshape(len(images), -1).astype(np.float32) / 255.0
        logits = np.stack([feats.mean(1), -feats.mean(1)], 1)
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        return {"features": feats, "probs": probs}

    return Extractor(name=name, resize="none", feature_dim=16, num_classes=2, batch_size=7, apply=apply)


class _Images:
    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "index": i}


def test_to_uint8_rounds_and_clips_like_a_png_writer():
    x = np.array([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0])
    np.testing.assert_array_equal(generative.to_uint8(x), [0, 0, 128, 255, 255, 255])
    np.testing.assert_array_equal(generative.to_uint8(np.array([0.5]), 0.0, 1.0), [128])


def test_samples_equal_to_the_reference_score_zero_fid_and_full_precision_recall(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60, 4, 4, 1), dtype=np.uint8)
    source, extractor = _Images(images), _pixel_extractor()
    real = generative.reference_outputs(extractor, source, "toy:test", 0, tmp_path)
    fake = generative.sample_outputs(extractor, lambda i: images[i * 25:(i + 1) * 25], 60)
    results = generative.compare(real, fake, generative.Protocol(num_samples=60, kid_subset_size=30, kid_subsets=10))
    assert results["fid"] == pytest.approx(0.0, abs=1e-6)
    assert results["precision"] == results["recall"] == 1.0
    assert set(results) == {"fid", "kid", "kid_std", "precision", "recall", "inception_score", "inception_score_std"}

    shifted = generative.sample_outputs(extractor, lambda i: np.clip(images.astype(int) + 64, 0, 255).astype(np.uint8), 60)
    worse = generative.compare(real, shifted, generative.Protocol(num_samples=60, kid_subset_size=30, kid_subsets=10))
    x, y = real["features"].astype(np.float64), shifted["features"].astype(np.float64)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expected = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert worse["fid"] == pytest.approx(expected, rel=1e-6) and worse["fid"] > 0.5
    assert worse["kid"] > results["kid"] + 0.1


def test_reference_features_are_cached_per_extractor_and_count(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(20, 4, 4, 1), dtype=np.uint8)
    calls = []

    class Counting(_Images):
        def __getitem__(self, i):
            calls.append(i)
            return super().__getitem__(i)

    source = Counting(images)
    first = generative.reference_outputs(_pixel_extractor(), source, "toy:test", 0, tmp_path)
    assert len(calls) == 20 and len(list(tmp_path.glob("reference-pixels-*.npz"))) == 1
    again = generative.reference_outputs(_pixel_extractor(), source, "toy:test", 0, tmp_path)
    assert len(calls) == 20, "the cached features should be reused"
    np.testing.assert_array_equal(first["features"], again["features"])
    generative.reference_outputs(_pixel_extractor("pixels@other"), source, "toy:test", 0, tmp_path)
    generative.reference_outputs(_pixel_extractor(), source, "toy:test", 10, tmp_path)
    assert len(calls) == 20 + 20 + 10, "another extractor or count must not reuse the cache"


@pytest.mark.slow  # 30-110 s on 2 busy cores: the fast step stays under 15 min
def test_fid_evaluator_runs_in_training_and_names_its_protocol(tmp_path, monkeypatch, shared_data):
    from test_gan_family import smoke

    from train import evaluate, trainer
    from train.metrics import domain

    monkeypatch.chdir(ROOT)
    extractor = domain.domain_extractor("mnist", tmp_path / "cache", None, steps=30)
    weights = next((tmp_path / "cache").glob("domain_mnist-*.safetensors"))
    config = smoke(**{"eval.metrics": ("fid", "disc"), "gan.extractor": "domain_mnist",
                      "gan.extractor_weights": str(weights), "gan.cache_dir": str(tmp_path / "reference"),
                      "gan.eval_samples": 48, "gan.sample_batch_size": 20, "gan.kid_subset_size": 16,
                      "gan.kid_subsets": 5})
    trainer.train(config, tmp_path / "run")
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    in_training = next(r for r in logged if "eval/fid" in r)
    assert extractor.name in in_training["eval/protocol"] and "48 samples vs 32 images" in in_training["eval/protocol"]
    assert list((tmp_path / "reference").glob("reference-domain_mnist-*.npz"))

    report = evaluate.evaluate(tmp_path / "run")["metrics"]
    for key in ("fid", "kid", "precision", "recall", "inception_score", "d_real_logit"):
        assert np.isfinite(report[key]) and report[key] == pytest.approx(in_training[f"eval/{key}"], rel=1e-5), key
    assert report["fid"] > 0 and 1.0 <= report["inception_score"] <= 10.0
