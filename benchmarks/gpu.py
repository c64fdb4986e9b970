"""The zoo's default training steps on one GPU, in float32 and bfloat16: images/s, MFU, peak memory.

    python -m benchmarks gpu [--models vae_conv64,df64,df128,dcgan64,fomm64] [--dtypes float32,bfloat16]
        [--forms plain,fast] [--forms-models df64,dcgan64] [--batch-scale 1 | --batch N]
        [--steps 30] [--warmup 5] [--budget-s 280] [--peak-tflops T] [--json out.json]

`benchmarks/gpu.sh` is the one command for a lent H100/H200 (it installs carried wheels first).
Every (model, dtype) runs in a fresh process, so each peak-memory figure is that step's alone:
the steps of `benchmarks.twin_specs.SPECS` (the same the CPU comparison times), compiled as the
trainer compiles them, with `model.dtype` (and a GAN discriminator's) set to the dtype; parameters
and optimiser state stay float32. Per run: first call (compile) seconds, steps/s median/min/max
over `--steps` timed steps after `--warmup`, images/s, the analytic FLOPs per step of
`benchmarks.torch_twins.FLOP_CONVENTION` (and XLA's own cost-analysis count beside it), achieved
TFLOP/s, MFU = achieved / the card's dense bf16 peak (also for float32 runs, so the two compare on
one scale), the device's peak bytes in use, and s/kimg (seconds per thousand training images, the
unit StyleGAN's papers report). Runs left when `--budget-s` is spent are listed as skipped, so the
script ends inside the 5 minutes a device session affords.

StyleGAN2 (`--models stylegan2_256`, `configs/stylegan2_ffhq256.py`, paper256 at batch 64; `gpu.sh`
runs it as a second call): each timed call is a whole 16-step cycle of its schedule (D and G every
step, lazy R1 once, path length four times), so steps/s, s/kimg and the FLOPs are means over the
cycle; `--steps` and `--warmup` are rounded up to whole cycles. Its "float32" run is the config's
own precision, the 4 highest resolutions in bfloat16 with conv_clamp 256 (NVIDIA's fp16 setting,
the one behind its 12.53 s/kimg on one A100), "bfloat16" every resolution; `precision` says which.
ADA is off in both, as in the config's default variant.

FOMM (`--models fomm256`, `gpu.sh`'s third call): the published 256 px networks of
`configs/reenact_fomm_vox256.py` (59.8M parameters) at its batch of 40 pairs, one step of the reenact
family (three keypoint-detector passes, dense motion, generator, the anti-aliased reconstruction pyramid
and both equivariance terms); images/s counts reconstructed driving frames (one per pair). The
reconstruction is L1 + DSSIM at FOMM's four scales, not the config's VGG19 pyramid (no VGG19 file on
the device), so the VGG19 forward and backward are not in the time. "bfloat16" computes the convs in
bfloat16; heatmap softmaxes, keypoints, Jacobians, sampling grids and the losses stay float32 (the zoo
casts them), and parameters stay float32.

`zoo.layers` has two forms of its convs and dense layers: XLA:CPU's custom-VJP ("fast") forms and
plain `lax` convolutions with JAX's autodiff ("plain"), which the zoo uses on GPU/TPU because the
fast forms were measured on CPU only. The `--forms-models` steps (DF-64 and DCGAN-64) run once per
`--forms` entry, first, and `forms_comparison` in the JSON gives fast/plain images/s for each, the
measurement that decides whether GPUs should get the fast forms too. Other steps run in "auto"
(the backend's own choice).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from typing import Any

from benchmarks import common
from benchmarks.twin_specs import SPECS
from zoo import layers

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s, by device_kind prefix.
BF16_DENSE_PEAK_TFLOPS = {
    "NVIDIA H100 80GB HBM3": 989.4,  # SXM
    "NVIDIA H100 PCIe": 756.0,
    "NVIDIA H100 NVL": 835.5,
    "NVIDIA H200": 989.4,
    "NVIDIA A100": 312.0,
}


# Steps the default run leaves out: StyleGAN2's (gpu.sh times paper256 in a call of its own) and the 256 px
# FOMM (likewise); each of those calls takes most of a device session's 5 minutes.
LARGE = ("stylegan2_64", "stylegan2_256", "fomm256")


def default_models() -> list[str]:
    """The steps a plain `python -m benchmarks gpu` times: every spec but those in `LARGE`."""
    return [m for m in SPECS if m not in LARGE]


def peak_tflops(device_kind: str, override: float) -> float | None:
    """The card's dense bf16 peak: `override` if given, else the datasheet figure for its kind."""
    if override:
        return override
    return next((v for k, v in BF16_DENSE_PEAK_TFLOPS.items() if device_kind.startswith(k)), None)


def measure(model: str, dtype: str, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    """One (model, dtype) on this process's first device: timings, FLOPs and peak device memory."""
    import jax

    from benchmarks.compare_torch import build_jax_step, xla_flops
    from benchmarks.torch_step import time_steps

    step = build_jax_step(model, dtype=dtype, batch=batch)
    timing = time_steps(step.run, warmup, steps, step.cycle)
    stats = jax.local_devices()[0].memory_stats() or {}
    result = {"model": model, "dtype": dtype, "precision": precision(model, dtype), "batch_size": batch,
              "steps_per_trainer_step": step.steps, "steps_every": step.every, **timing,
              "xla_flops_per_step": xla_flops(step.compile(), step.every),
              "peak_device_bytes": stats.get("peak_bytes_in_use"),
              "device_kind": jax.local_devices()[0].device_kind}
    try:
        from benchmarks import torch_twins

        result["flops_per_step"] = torch_twins.step_flops(model, batch)["flops_per_step"]
        result["flop_convention"] = torch_twins.FLOP_CONVENTION
    except ImportError:  # no torch: MFU falls back to XLA's count, and says so
        result["flops_per_step"] = result["xla_flops_per_step"]
        result["flop_convention"] = "XLA cost analysis (torch not installed for the analytic count)"
    return result


def precision(model: str, dtype: str) -> str:
    """What `dtype` means for the spec's nets: StyleGAN2 keeps its `num_bf16_res` highest resolutions in bfloat16."""
    bf16_res = SPECS[model].fields.get("num_bf16_res", 0)
    if dtype == "bfloat16" or not bf16_res:
        return f"{dtype} compute, float32 params"
    return f"{dtype} compute with the {bf16_res} highest resolutions in bfloat16 (the config's), float32 params"


def measure_in_forms(model: str, dtype: str, forms: str, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    """`measure` with zoo.layers' forms forced to `forms` ("plain", "fast" or "auto") while it traces."""
    with layers.use_forms(forms):
        return {"forms": forms, "fast_forms": layers.fast_forms_enabled(),
                **measure(model, dtype, batch, steps, warmup)}


def plan(models: list[str], dtypes: list[str], forms: list[str], forms_models: list[str]) -> list[tuple[str, str, str]]:
    """(model, dtype, forms) runs: each `forms_models` step in every form first, so the budget keeps them."""
    compared = [(m, d, f) for m in models if m in forms_models for d in dtypes for f in forms]
    return compared + [(m, d, "auto") for m in models if m not in forms_models for d in dtypes]


def compare_forms(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """fast / plain images/s of every (model, dtype) measured in both forms."""
    rates = {(r["model"], r["dtype"], r["forms"]): r["images_per_s"] for r in runs if "images_per_s" in r}
    return [{"model": m, "dtype": d, "plain_images_per_s": rate, "fast_images_per_s": rates[(m, d, "fast")],
             "fast_over_plain": round(rates[(m, d, "fast")] / rate, 3)}
            for (m, d, f), rate in rates.items() if f == "plain" and (m, d, "fast") in rates]


def _batch(model: str, args: argparse.Namespace) -> int:
    """`--batch` if given, else the spec's batch times `--batch-scale`."""
    return args.batch or SPECS[model].batch * args.batch_scale


def _worker_command(model: str, dtype: str, forms: str, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "benchmarks.gpu", "--worker", "--models", model, "--dtypes", dtype,
            "--forms", forms, "--batch", str(_batch(model, args)), "--steps", str(args.steps),
            "--warmup", str(args.warmup)]


def summarise(result: dict[str, Any], peak: float | None) -> dict[str, Any]:
    """Adds images/s, achieved TFLOP/s and MFU to a worker's result."""
    if "error" in result:
        return result
    rate = result["steps_per_s"]["median"]
    images = SPECS[result["model"]].images(result["batch_size"])
    achieved = rate * result["flops_per_step"] / 1e12
    return {**result, "images_per_s": round(rate * images, 1), "s_per_kimg": round(1000.0 / (rate * images), 3),
            "achieved_tflop_per_s": round(achieved, 2), "mfu_vs_bf16_dense_peak": round(achieved / peak, 4) if peak else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(default_models()),
                        help=f"steps to time, from {','.join(SPECS)} (default: all but {', '.join(LARGE)})")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--forms", default="plain,fast", help="zoo.layers forms to time the --forms-models steps in")
    parser.add_argument("--forms-models", default="df64,dcgan64", help="steps timed in every --forms entry")
    parser.add_argument("--batch-scale", type=int, default=1, help="multiply each spec's batch size by this")
    parser.add_argument("--batch", type=int, default=0, help="one batch size for every step (0: the specs')")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=280.0, help="start no run after this many seconds")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the card's dense bf16 peak, if not in the table")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    models, dtypes, forms = args.models.split(","), args.dtypes.split(","), args.forms.split(",")
    forms_models = [m for m in args.forms_models.split(",") if m]
    unknown = set(models + forms_models) - set(SPECS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {', '.join(SPECS)}")
    bad_forms = sorted(set(forms) - set(layers.FORMS))
    if bad_forms:
        parser.error(f"unknown forms {bad_forms}; choose from {', '.join(layers.FORMS)}")
    if args.worker:
        model, dtype = models[0], dtypes[0]
        try:
            result = measure_in_forms(model, dtype, forms[0], _batch(model, args), args.steps, args.warmup)
        except Exception as e:  # noqa: BLE001 - reported in the driver's JSON
            result = {"model": model, "dtype": dtype, "forms": forms[0], "error": f"{type(e).__name__}: {e}"[:4000]}
        common.emit(result, args.json)
        return

    import jax

    kind = jax.local_devices()[0].device_kind
    peak = peak_tflops(kind, args.peak_tflops)
    runs_planned = plan(models, dtypes, forms, forms_models)
    start, runs = time.time(), []
    for model, dtype, form in runs_planned:
        left = args.budget_s - (time.time() - start)
        if left <= 0:
            runs.append({"model": model, "dtype": dtype, "forms": form,
                         "skipped": f"the {args.budget_s:.0f} s budget was spent"})
            continue
        runs.append(summarise(common.run_worker(_worker_command(model, dtype, form, args), left + 60, ROOT), peak))
        r = runs[-1]
        print(f"{model} {dtype} {form}: " + (f"{r['images_per_s']} images/s, MFU {r['mfu_vs_bf16_dense_peak']}"
                                             if "images_per_s" in r else r.get("error", "")[:300]),
              file=sys.stderr, flush=True)
    common.emit({"benchmark": "gpu", "device_kind": kind, "bf16_dense_peak_tflops": peak,
                 "batch_scale": args.batch_scale, "batch": args.batch or None, "runs": runs,
                 "forms_comparison": compare_forms(runs), "seconds": round(time.time() - start, 1),
                 "commands": {f"{m}:{d}:{f}": "python " + " ".join(_worker_command(m, d, f, args)[1:])
                              for m, d, f in runs_planned},
                 "xla_flags": os.environ.get("XLA_FLAGS", ""), "machine": common.machine()}, args.json)


if __name__ == "__main__":
    common.entry(main)
