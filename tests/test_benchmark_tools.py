"""The profiling and GPU benchmark helpers: HLO convs rebuilt exactly, FLOPs and MFU by formula, both layer forms."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import import_torch
from jax import lax

from benchmarks import gpu, step_convs
from benchmarks.twin_specs import SPECS


@pytest.mark.parametrize("strides,padding,groups", [((2, 2), ((1, 2), (2, 1)), 1), ((1, 1), "SAME", 4)])
def test_a_convolution_read_from_hlo_is_rebuilt_with_the_same_result(strides, padding, groups):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 9, 8, 8)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 8 // groups, 12)), jnp.float32)

    def conv(x, k):
        return lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=groups)

    grad = jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) ** 2), argnums=(0, 1)))
    found = step_convs.convolutions(grad.lower(x, k).compile().as_text())
    assert found, "the compiled gradient holds convolutions"
    forward = next(c for c in found if c["lhs"] == x.shape and c["rhs"] == k.shape)
    w = forward["window"]
    rebuilt = lax.conv_general_dilated(
        x, k, w["strides"], w["padding"], w["lhs_dilation"], w["rhs_dilation"],
        step_convs._dimension_numbers(forward["labels"]), feature_group_count=forward["feature_group_count"])
    np.testing.assert_allclose(rebuilt, conv(x, k), rtol=1e-5, atol=1e-5)
    out = conv(x, k).shape
    assert step_convs.flops(forward) == 2 * math.prod(out) * 9 * (8 // groups)


def test_peak_and_mfu_follow_the_datasheet_and_the_flop_count():
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3", 0.0) == 989.4
    assert gpu.peak_tflops("NVIDIA H200", 0.0) == 989.4
    assert gpu.peak_tflops("Some future card", 0.0) is None
    assert gpu.peak_tflops("Some future card", 123.0) == 123.0
    run = {"model": "df64", "batch_size": 32, "steps_per_s": {"median": 10.0}, "flops_per_step": 2e12}
    out = gpu.summarise(run, peak=1000.0)
    assert out["images_per_s"] == 10.0 * 2 * 32  # both sides of every swap pair
    assert out["achieved_tflop_per_s"] == 20.0 and out["mfu_vs_bf16_dense_peak"] == 0.02
    assert out["s_per_kimg"] == round(1000 / 640, 3)  # seconds per thousand training images, StyleGAN's unit
    assert "4 highest resolutions in bfloat16" in gpu.precision("stylegan2_256", "float32")
    assert "highest" not in gpu.precision("stylegan2_256", "bfloat16") + gpu.precision("df64", "float32")
    assert gpu.summarise({"error": "x"}, 1000.0) == {"error": "x"}


@pytest.mark.slow  # 10-20 s each: the fast step stays under 15 min on 2 cores
def test_the_gpu_worker_runs_a_bf16_step_at_another_batch_on_any_backend():
    import_torch()  # the analytic FLOP count
    from benchmarks import torch_twins

    run = gpu.measure("vae_conv64", "bfloat16", batch=8, steps=2, warmup=0)
    assert run["dtype"] == "bfloat16" and run["batch_size"] == 8 and run["steps_per_s"]["median"] > 0
    full = torch_twins.step_flops("vae_conv64")["flops_per_step"]
    assert run["flops_per_step"] == full * 8 // SPECS["vae_conv64"].batch
    assert 0.5 < run["xla_flops_per_step"] / run["flops_per_step"] < 1.5  # XLA counts about the same convs


def test_train_step_overrides_take_the_fields_type_and_name_unknown_fields():
    from benchmarks import train_step
    from train import config as config_lib

    config = config_lib.load("configs/vae_digits.py:smoke")
    train_step.override(config, "data.source=synthetic_faces:n=40;size=64")
    train_step.override(config, "batch_size=12")
    train_step.override(config, "data.worker_count=0")
    assert config.data.source == "synthetic_faces:n=40;size=64" and config.batch_size == 12
    with pytest.raises(config_lib.ConfigError, match="sourse"):
        train_step.override(config, "data.sourse=digits")
    with pytest.raises(ValueError, match="field=value"):
        train_step.override(config, "batch_size")


@pytest.mark.slow  # 10-20 s each: the fast step stays under 15 min on 2 cores
def test_train_step_runs_a_paired_config_through_the_trainers_pipeline():
    from benchmarks import train_step

    small = ["batch_size=2", "parallel.num_devices=1"]
    result = train_step.measure("configs/swap_df_synthetic.py:smoke", small, steps=6, window=2)
    assert result["images_per_step"] == 4, "both sides of each pair are counted"
    assert result["steps"] and result["compile_seconds"] > 0
    for key in ("step_only", "step_synced", "input_pipeline", "train_loop"):
        rates = result[f"{key}_images_per_s"]
        assert 0 < rates["min"] <= rates["median"] <= rates["max"]
        assert rates["median"] == pytest.approx(4 * result[f"{key}_steps_per_s"]["median"])
    only = train_step.measure("configs/swap_df_synthetic.py:smoke", small, steps=6, window=2, pipeline_only=True)
    assert "input_pipeline_images_per_s" in only and "step_only_steps_per_s" not in only


@pytest.mark.slow  # 10-20 s each: the fast step stays under 15 min on 2 cores
def test_the_gpu_benchmark_times_both_layer_forms_and_compares_them(tmp_path, monkeypatch):
    """`--forms plain,fast` on a tiny step, its workers run in this process: both runs, and fast/plain in the JSON."""
    import json
    import sys

    from benchmarks import common

    def in_process_worker(command, timeout, cwd, env=None):
        out = tmp_path / "worker.json"
        monkeypatch.setattr(sys, "argv", ["gpu", *command[3:], "--json", str(out)])
        gpu.main()
        return json.loads(out.read_text())

    monkeypatch.setattr(common, "run_worker", in_process_worker)
    out = tmp_path / "gpu.json"
    tiny = ["--models", "vae_conv64", "--dtypes", "float32", "--forms-models", "vae_conv64", "--batch", "2"]
    monkeypatch.setattr(sys, "argv", ["gpu", *tiny, "--steps", "2", "--warmup", "0", "--json", str(out)])
    gpu.main()
    report = json.loads(out.read_text())
    assert [(r["forms"], r["fast_forms"], r["batch_size"]) for r in report["runs"]] == [
        ("plain", False, 2), ("fast", True, 2)], report["runs"]
    (compared,) = report["forms_comparison"]
    assert compared["model"] == "vae_conv64" and compared["fast_over_plain"] > 0
    assert set(report["commands"]) == {"vae_conv64:float32:plain", "vae_conv64:float32:fast"}


def test_the_gpu_plan_runs_the_compared_steps_first_in_every_form():
    dtypes, forms = ["float32", "bfloat16"], ["plain", "fast"]
    runs = gpu.plan(["vae_conv64", "df64", "dcgan64"], dtypes, forms, ["df64", "dcgan64"])
    assert runs[:8] == [(m, d, f) for m in ("df64", "dcgan64") for d in dtypes for f in forms]
    assert runs[8:] == [("vae_conv64", "float32", "auto"), ("vae_conv64", "bfloat16", "auto")]


def test_the_iwae_benchmark_counts_the_decoders_gemm_flops_and_times_the_evaluator():
    from benchmarks import iwae

    # 784-200-200-50 decoder: 50x200 + 200x200 + 200x784 multiply-adds per latent sample.
    assert iwae.decoder_flops(3, 7) == 2 * 3 * 7 * (50 * 200 + 200 * 200 + 200 * 784)
    out = iwae.measure(images=2, k=8, chunk=8, repeats=1)  # unrounded: a tiny run takes well under a millisecond
    assert out["decoder_gflop_per_s"] == pytest.approx(iwae.decoder_flops(2, 8) / out["seconds"] / 1e9)


def test_a_benchmark_started_as_its_own_module_gets_the_xla_cpu_flag(monkeypatch):
    """`python -m benchmarks.train_step` ran without the flag `python -m benchmarks train_step` sets, so the same
    step measured 3.46 against 4.29 steps/s; every module's __main__ block now goes through common.entry."""
    import os
    import pathlib

    from benchmarks import common
    from benchmarks.__main__ import names
    from zoo import xla_cpu

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    seen = []
    common.entry(lambda: seen.append(os.environ["XLA_FLAGS"]))
    assert seen and xla_cpu.FLAG in seen[0] and "device_count=8" in seen[0]
    root = pathlib.Path(common.__file__).parent
    for name in names():
        text = (root / f"{name}.py").read_text()
        if name == "torch_step":  # the PyTorch worker imports no JAX, so it needs no XLA flag
            continue
        assert 'if __name__ == "__main__":\n    main()' not in text, f"benchmarks/{name}.py skips common.entry"


@pytest.mark.slow
def test_the_reenact_probe_reads_a_pair_of_equal_frames_as_the_identity_case():
    """Driving = source: the copy costs nothing, the prediction is the identity row, and blur costs more at 4x."""
    from benchmarks import reenact_probe
    from train import config as config_lib
    from train.families import reenact

    config = config_lib.load("configs/reenact_fomm_synthetic.py:smoke")
    model = reenact.build_model(config, (64, 64, 3))
    variables = model.init(jax.random.key(0), *model.example_inputs())
    frames = np.asarray(jax.random.randint(jax.random.key(1), (2, 64, 64, 3), 0, 256), np.uint8)
    rows = reenact_probe.probe_split(model, dict(variables), {"source_image": frames, "driving_image": frames})
    assert rows["copy"] == 0.0
    assert rows["prediction"] == pytest.approx(rows["identity"], abs=1e-7)
    assert rows["prediction_train_mode"] != rows["prediction"]  # batch statistics, not the initial running ones
    assert 0 < rows["blur_2x"] < rows["blur_4x"]
    assert all(0 <= v <= 1 for v in rows.values())


@pytest.mark.slow  # 10,000 samples and the floor: about 40 s
def test_gan_quality_measures_a_bundled_generator_as_its_card_states(tmp_path, monkeypatch):
    """`--export NAME` re-measures the README's GAN row from the bundled file, under the card's own protocol."""
    import json
    import sys

    from conftest import FASHION_MNIST

    from benchmarks import gan_quality
    from zoo import catalogue

    if not FASHION_MNIST.is_dir():
        pytest.skip(f"Fashion-MNIST not found at {FASHION_MNIST} (apt-get install -y dataset-fashion-mnist)")
    out = tmp_path / "gq.json"
    monkeypatch.setattr(sys, "argv", ["gan_quality", "--export", "sngan_fashion_mnist", "--json", str(out)])
    gan_quality.main()
    report = json.loads(out.read_text())
    card = {m.name: m for m in catalogue.REGISTRY["sngan_fashion_mnist"].card.metrics if m.slow}
    for name, metric in card.items():
        assert abs(report["samples"][name] - metric.value) <= metric.tolerance, (name, report["samples"][name])
    assert report["training_images_floor"]["fid"] < 0.5 < report["samples"]["fid"]
    assert report["sha256"] == catalogue.REGISTRY["sngan_fashion_mnist"].sha256
