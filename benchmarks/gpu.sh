#!/usr/bin/env bash
# The GPU benchmark on one lent NVIDIA H100/H200 with JAX CUDA: `bash benchmarks/gpu.sh [gpu.py options]`.
#
# Writes $OUT/gpu.json (runs/gpu.json without $OUT) within about 5 minutes: every default step in
# float32 and bfloat16, images/s, MFU against the card's dense bf16 peak, peak device memory; then
# $OUT/gpu_stylegan2.json within about 5 more: StyleGAN2 at 256 px (paper256, batch 64) in the
# config's precision (4 highest resolutions bf16) and all-bf16, with s/kimg (NVIDIA: 12.53 on one A100);
# then $OUT/gpu_fomm.json: FOMM's published 256 px networks (batch 40) in bfloat16 and float32, steps/s
# and images/s (L1 + DSSIM pyramid in place of VGG19, whose weights are not on the device).
# DF-64 and DCGAN-64 run first in both zoo.layers forms (plain lax convs, the zoo's GPU default, and
# the XLA:CPU custom-VJP forms); "forms_comparison" gives fast/plain images/s, which decides
# whether GPUs keep the plain forms (`--forms`, `--forms-models` choose otherwise).
# The device image has jax, flax, optax, orbax, chex, einops, absl and torch but not grain,
# array-record, ml-collections or portpicker; carry them as wheels for its Python 3.12, made here once with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     grain==0.2.18 array-record==0.8.6 ml-collections==1.1.0 portpicker==1.6.0
# (with .whl in .git/info/exclude); this script installs whatever .whl holds before it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
out=${OUT:-runs}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -m benchmarks gpu --json "$out/gpu.json" "$@"
python3 -m benchmarks gpu --models stylegan2_256 --dtypes float32,bfloat16 --json "$out/gpu_stylegan2.json"
python3 -m benchmarks gpu --models fomm256 --dtypes bfloat16,float32 --json "$out/gpu_fomm.json"
