"""Where a training step's time goes: every convolution XLA runs in it, timed alone.

    python -m benchmarks step_convs --model {vae_conv64,df64,df128,dcgan64} [--runs 20] [--top 15]
        [--json out.json]

The step of `benchmarks.twin_specs.SPECS[model]` is compiled as the trainer compiles it and its
optimised HLO is read back; each `convolution` instruction (forward, input gradient, weight
gradient, after XLA's own rewrites) is rebuilt as one `lax.conv_general_dilated` with the same
shapes, window and dimension labels, jitted alone and timed. The report lists the convolutions by
total time with their achieved GFLOP/s and sums them against the whole step's time, so a slow
formulation stands out against the GEMM peak of `python -m benchmarks peak`, and the time spent
outside convolutions (element-wise fusions, reductions, the optimiser) is what is left over.
"""
from __future__ import annotations

import argparse
import collections
import math
import re
import statistics
import time
from typing import Any

import jax
import numpy as np
from jax import lax

from benchmarks import common
from benchmarks.compare_torch import build_jax_step
from benchmarks.twin_specs import SPECS

_DEF = re.compile(r"%([\w.\-]+) = (\w+)\[([\d,]*)\]")
_CONV = re.compile(r"%([\w.\-]+) = (\w+)\[([\d,]*)\]\S* convolution\(%([\w.\-]+), %([\w.\-]+)\), (.*)")


def step_hlo(model: str) -> tuple[list[str], float]:
    """The optimised HLO text of each of the spec's steps, and the median time of one trainer step."""
    step = build_jax_step(model)
    times = []
    for _ in range(25):
        start = time.perf_counter()
        step.run()
        times.append(time.perf_counter() - start)
    return [c.as_text() for c in step.compile()], statistics.median(times[5:])


def _window(text: str) -> dict[str, Any]:
    fields = dict(re.findall(r"(\w+)=([\w_x\-]+)", re.search(r"window=\{([^}]*)\}", text).group(1)))
    size = [int(v) for v in fields["size"].split("x")]
    dims = len(size)

    def pair(key: str, default: int) -> list[int]:
        return [int(v) for v in fields[key].split("x")] if key in fields else [default] * dims

    pads = [tuple(int(v) for v in p.split("_")) for p in fields["pad"].split("x")] if "pad" in fields else [(0, 0)] * dims
    reversal = pair("rhs_reversal", 0)
    return dict(size=size, strides=pair("stride", 1), padding=pads, lhs_dilation=pair("lhs_dilate", 1),
                rhs_dilation=pair("rhs_dilate", 1), reversal=reversal)


def _dimension_numbers(labels: str) -> lax.ConvDimensionNumbers:
    lhs, rest = labels.split("_", 1)
    rhs, out = rest.split("->")

    def spec(s: str, first: str, second: str) -> tuple[int, ...]:
        spatial = sorted((c for c in s if c.isdigit()), key=int)
        return (s.index(first), s.index(second), *(s.index(c) for c in spatial))

    return lax.ConvDimensionNumbers(spec(lhs, "b", "f"), spec(rhs, "o", "i"), spec(out, "b", "f"))


def convolutions(hlo: str) -> list[dict[str, Any]]:
    """Every convolution instruction of an HLO module: operand and result shapes, window, labels, groups."""
    shapes = {m.group(1): tuple(int(d) for d in m.group(3).split(",") if d) for m in _DEF.finditer(hlo)}
    convs = []
    for m in _CONV.finditer(hlo):
        name, dtype, out, lhs, rhs, attrs = m.groups()
        labels = re.search(r"dim_labels=([\w>\-]+)", attrs).group(1)
        groups = re.search(r"feature_group_count=(\d+)", attrs)
        batch_groups = re.search(r"batch_group_count=(\d+)", attrs)
        op = re.search(r'op_name="([^"]*)"', attrs)
        convs.append(dict(
            name=name, dtype=dtype, lhs=shapes[lhs], rhs=shapes[rhs], out=tuple(int(d) for d in out.split(",")),
            window=_window(attrs), labels=labels, feature_group_count=int(groups.group(1)) if groups else 1,
            batch_group_count=int(batch_groups.group(1)) if batch_groups else 1,
            op=op.group(1).split("/", 1)[-1] if op else ""))
    return convs


def flops(conv: dict[str, Any]) -> int:
    """2 x output elements x (kernel window x input features per group): the multiply-adds it does."""
    dn = _dimension_numbers(conv["labels"])
    rhs = conv["rhs"]
    window = math.prod(rhs[d] for d in dn.rhs_spec[2:])
    return 2 * math.prod(conv["out"]) * window * rhs[dn.rhs_spec[1]]


def time_conv(conv: dict[str, Any], runs: int) -> float:
    """Median seconds of the convolution jitted alone on random operands (a reversed window is timed unreversed)."""
    w = conv["window"]
    fn = jax.jit(lambda a, b: lax.conv_general_dilated(
        a, b, w["strides"], w["padding"], w["lhs_dilation"], w["rhs_dilation"], _dimension_numbers(conv["labels"]),
        feature_group_count=conv["feature_group_count"], batch_group_count=conv["batch_group_count"]))
    rng = np.random.default_rng(0)
    a, b = (jax.numpy.asarray(rng.standard_normal(conv[k]), conv["dtype"].replace("f32", "float32")
                              .replace("bf16", "bfloat16")) for k in ("lhs", "rhs"))
    fn(a, b).block_until_ready()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(SPECS))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--top", type=int, default=15, help="convolution kinds listed")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    texts, step_s = step_hlo(args.model)
    kinds: dict[tuple, dict[str, Any]] = collections.OrderedDict()
    for conv in (c for text in texts for c in convolutions(text)):
        key = (conv["lhs"], conv["rhs"], conv["out"], conv["labels"], str(conv["window"]), conv["feature_group_count"],
               conv["batch_group_count"])
        kinds.setdefault(key, dict(conv, count=0))["count"] += 1
    rows = []
    for kind in kinds.values():
        seconds = time_conv(kind, args.runs)
        gflop = flops(kind) / 1e9
        rows.append({"op": kind["op"], "count": kind["count"], "lhs": kind["lhs"], "rhs": kind["rhs"], "out": kind["out"],
                     "window": kind["window"], "labels": kind["labels"],
                     "groups": kind["feature_group_count"], "ms_each": round(1e3 * seconds, 3),
                     "ms_total": round(1e3 * seconds * kind["count"], 3), "gflop_each": round(gflop, 4),
                     "gflop_per_s": round(gflop / seconds, 1)})
    rows.sort(key=lambda r: -r["ms_total"])
    conv_ms = sum(r["ms_total"] for r in rows)
    common.emit({
        "benchmark": "step_convs", "model": args.model, "step_ms": round(1e3 * step_s, 1),
        "convolutions": sum(r["count"] for r in rows), "conv_ms_alone": round(conv_ms, 1),
        "conv_gflop": round(sum(r["gflop_each"] * r["count"] for r in rows), 2),
        "conv_gflop_per_s": round(sum(r["gflop_each"] * r["count"] for r in rows) / conv_ms * 1e3, 1),
        "rest_ms": round(1e3 * step_s - conv_ms, 1), "slowest": rows[: args.top], "machine": common.machine(),
    }, args.json)


if __name__ == "__main__":
    common.entry(main)
