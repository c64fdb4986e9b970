"""A zoo training step against its PyTorch twin on this machine: time ratio JAX / PyTorch per setting.

    python -m benchmarks compare_torch --model {vae_conv64,df64,df128,dcgan64,stylegan2_64,fomm64} [--batch B] [--steps 30]
        [--warmup 5] [--rounds 3] [--settings eager,channels_last,compile,compile_channels_last] [--no-donate]
        [--json out.json]

Each round runs the JAX step and every PyTorch setting once, each in a fresh process, in reverse
order on odd rounds so drift in the machine's speed falls on both sides. A process builds its
step on one synthetic batch of the spec's shape (no data loading; `--batch` changes the batch size,
per side for a swap, on both sides of the comparison), times the first call (compile
included), runs `--warmup` steps, then times each of `--steps` steps, blocking on the result of
each (JAX: block_until_ready on the state; torch CPU is synchronous). The JAX side is the family's
own step(s) from the config that `benchmarks.twin_specs` names (with the spec's `overrides`, e.g.
StyleGAN2's ADA off), compiled by the trainer's runner with state donation (`--no-donate`: without);
a DCGAN step is its D step then its G step. A family with lazy steps (StyleGAN2: R1 every 16, path
length every 4) runs them on the trainer's schedule on both sides, and each timed call is one whole
cycle of the schedule (`Spec.cycle` trainer steps, from a multiple of it), so `--steps` and `--warmup`
are rounded up to whole cycles and steps/s is trainer steps per second averaged over each cycle.
PyTorch: see `benchmarks.torch_step` (torch.set_num_threads(os.cpu_count())).

Reported per setting: first-call seconds (torch.compile's cold, from an empty inductor cache in
every process, as JAX's has no persistent cache), steps/s (median of each round's median, min and
max over all timed steps), images/s, peak RSS of the worker process (torch.compile's compile
subprocesses not included), achieved FLOP/s of the analytic FLOPs per step
(`benchmarks.torch_twins.FLOP_CONVENTION`); and per PyTorch setting the ratio JAX step time /
PyTorch step time of each round with its min/median/max (below 1.0: JAX is faster).
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import re
import statistics
import sys
import tempfile
from typing import Any, Callable

import numpy as np

from benchmarks import common
from benchmarks.torch_step import SETTINGS, time_steps
from benchmarks.twin_specs import SPECS, Spec

ROOT = pathlib.Path(__file__).resolve().parents[1]
_NETS = {"vae": ("vae",), "swap": ("swap",), "gan": ("G", "D"), "reenact": ("reenactor",)}
_MISSING = "<missing>"


def jax_config(spec: Spec) -> Any:
    """The zoo config the JAX side runs: the spec's config file, or base_config() with the VAE section."""
    from train import config as config_lib
    from train import families

    if spec.config:
        config = config_lib.load(str(ROOT / spec.config))
    else:
        config = config_lib.base_config()
        config.vae = families.get("vae").section()
    for path, value in spec.overrides.items():
        *parents, field = path.split(".")
        section = config
        for part in parents:
            section = section[part]
        if field not in section:
            raise ValueError(f"spec override {path!r} names no field of {spec.config or 'base_config()'}")
        section[field] = value
    return config


def image_size(config: Any) -> int:
    """The side the data are resized to: data.resolution, else the source spec's `size=` (StyleGAN2's configs)."""
    found = re.search(r"[:;]size=(\d+)", config.data.source)
    return config.data.resolution or (int(found.group(1)) if found else 0)


def _models(spec: Spec, config: Any) -> dict[str, Any]:
    """The zoo modules of the config's nets, named as the family's state["params"]."""
    from train.config import model_kwargs
    from zoo import registry

    sections = [config.model] + ([config.gan.discriminator] if spec.family == "gan" else [])
    models = {}
    for net, section in zip(_NETS[spec.family], sections):
        kw = {k: v for k, v in model_kwargs(section).items() if k != "dtype"}
        if spec.family != "swap":
            kw["image_shape"] = spec.image
        models[net] = registry.create_model(section.name, **kw)
    return models


def check_spec(spec: Spec, config: Any) -> None:
    """Raise ValueError naming every field where the twin's spec differs from the zoo config it mirrors."""
    wrong: list[str] = []

    def same(what: str, ours: Any, theirs: Any) -> None:
        if ours != theirs:
            wrong.append(f"{what}: twin {ours!r}, config {theirs!r}")

    same("family", spec.family, config.family)
    same("batch_size", spec.batch, config.batch_size)
    same("model.dtype", "float32", config.model.dtype)
    for key, value in dict(spec.optim, schedule="constant", update_keep_prob=1.0).items():
        same(f"optim.{key}", value, config.optim[key])
    for key, value in spec.hparams.items():
        same(f"{spec.family}.{key}", value, config[spec.family][key])
    wanted = [(spec.model, spec.fields, config.model.name)]
    if spec.family == "gan":
        disc = {k: v for k, v in spec.disc.items() if k != "name"}
        wanted.append((spec.disc["name"], disc, config.gan.discriminator.name))
    for (name, fields, configured), model in zip(wanted, _models(spec, config).values()):
        same("model name", name, configured)
        for f in dataclasses.fields(model):
            if f.name not in ("parent", "name", "image_shape", "dtype", "param_dtype"):
                same(f"{name}.{f.name}", fields.get(f.name, _MISSING), getattr(model, f.name))
    if spec.family == "gan":
        same("image size (data.resolution or the source's size=)", spec.image[0], image_size(config))
    if spec.family == "reenact" and image_size(config):  # a user's extraction (vox256) states no size here
        same("image size (data.resolution or the source's size=)", spec.image[0], image_size(config))
    if spec.family == "swap":
        same("image", spec.image, (config.model.resolution, config.model.resolution, 3))
        same("masks in both sources", spec.masks, all("masks=1" in s for s in (config.data.source, config.data.source_b)))
    if wrong:
        raise ValueError(f"twin spec differs from {spec.config or 'base_config()'}: " + "; ".join(wrong))


def jax_param_counts(spec: Spec) -> dict[str, int]:
    """Parameters of each zoo net, from jax.eval_shape of its init (nothing is computed)."""
    import jax

    counts = {}
    for net, model in _models(spec, jax_config(spec)).items():
        params = jax.eval_shape(model.init, jax.random.key(0), *model.example_inputs())["params"]
        counts[net] = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    return counts


def synthetic_batch(spec: Spec, batch: int | None = None) -> dict[str, Any]:
    """A host batch as the family's step receives it: uint8 images (reenact: source and driving frames), or swap
    sides of [0, 1) floats (and masks)."""
    rng = np.random.default_rng(0)
    b, (h, w, c) = batch or spec.batch, spec.image
    if spec.family == "reenact":
        return {k: rng.integers(0, 256, (b, h, w, c), dtype=np.uint8) for k in ("source_image", "driving_image")}
    if spec.family != "swap":
        return {"image": rng.integers(0, 256, (b, h, w, c), dtype=np.uint8)}

    def side() -> dict[str, np.ndarray]:
        masks = {k: (rng.random((b, h, w, 1)) > 0.5).astype(np.float32) for k in ("mask", "em_mask")}
        return {"input": rng.random((b, h, w, c), np.float32), "target": rng.random((b, h, w, c), np.float32)} | (
            masks if spec.masks else {})

    return {"a": side(), "b": side()}


@dataclasses.dataclass
class JaxStep:
    """A spec's trainer step(s), compiled and ready: `run()` does one cycle of `cycle` trainer steps and waits."""

    run: Callable[[], None]  # one cycle: `cycle` trainer steps
    steps: list[str]
    compile: Callable[[], list[Any]]  # each step compiled again on abstract inputs, for its HLO and cost analysis
    every: list[int] = dataclasses.field(default_factory=list)  # each step's interval in trainer steps
    cycle: int = 1


def build_jax_step(name: str, dtype: str = "float32", batch: int | None = None, donate: bool = True) -> JaxStep:
    """The family's step(s) of SPECS[name] as the trainer compiles them, on one reused synthetic batch.

    With the defaults the config must match the twin's spec exactly (`check_spec`); a `dtype` or
    `batch` other than the spec's (the GPU benchmark's bf16 and larger batches) skips that check.
    `donate=False` compiles the steps without the trainer's state donation. Steps with an interval
    run when the trainer would (trainer step % every == 0); `run()` does one cycle of `spec.cycle`.
    """
    import jax

    from train import config as config_lib
    from train import families, parallel

    spec = SPECS[name]
    config = jax_config(spec)
    if dtype == "float32" and batch in (None, spec.batch):
        check_spec(spec, config)
    config.unlock()
    config.model.dtype = dtype
    if spec.family == "gan":
        config.gan.discriminator.dtype = dtype
    config.batch_size = batch or spec.batch
    config.parallel.num_devices = 1  # figures are per chip, also where more devices exist
    module = families.get(config.family)
    config_lib.validate(config, module.section())
    family = module.make(config, spec.image)
    every = {k: s.every for k, s in family.steps.items()}
    if every != (spec.steps_every or {k: 1 for k in every}):
        raise ValueError(f"{name}: the family schedules {every}, the twin {spec.steps_every or 'every step'}")
    runner = parallel.Runner.create(config.parallel.strategy, config.parallel.num_devices)
    root = jax.random.key(config.seed)
    data = runner.put_batch(synthetic_batch(spec, batch))
    state = runner.init(family.init, jax.random.fold_in(root, 1), data)
    fns = [runner.compile_step(s.fn, root, i, donate) for i, s in enumerate(family.steps.values())]
    count = 0

    def run() -> None:
        nonlocal state, count
        for _ in range(spec.cycle):
            for fn, k in zip(fns, every.values()):
                if count % k == 0:
                    state, _ = fn(state, data, count)
            count += 1
        jax.block_until_ready(state)

    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), (state, data))

    def compile_all() -> list[Any]:
        return [jax.jit(lambda st, b, f=s.fn: f(st, b, jax.random.key(0))).lower(*abstract).compile()
                for s in family.steps.values()]

    return JaxStep(run, list(family.steps), compile_all, list(every.values()), spec.cycle)


def xla_flops(compiled: list[Any], every: list[int] | None = None) -> float:
    """XLA's cost-analysis FLOPs of one trainer step: each compiled step's, divided by its interval, summed."""
    costs = [c.cost_analysis() for c in compiled]
    every = every or [1] * len(costs)
    return sum((c[0] if isinstance(c, list) else c).get("flops", 0.0) / k for c, k in zip(costs, every))


def measure_jax(name: str, steps: int, warmup: int, batch: int = 0, donate: bool = True) -> dict[str, Any]:
    """The family's step(s) of SPECS[name] compiled as the trainer compiles them, timed on one reused batch."""
    import jax

    step = build_jax_step(name, batch=batch or None, donate=donate)
    return {"jax": jax.__version__, "backend": jax.default_backend(), "steps_per_trainer_step": step.steps,
            "donates_state": donate, **time_steps(step.run, warmup, steps, step.cycle)}


def _command(setting: str, args: argparse.Namespace) -> list[str]:
    """The worker command line of one setting."""
    common_args = ["--model", args.model, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.batch:
        common_args += ["--batch", str(args.batch)]
    if setting == "jax":
        return [sys.executable, "-m", "benchmarks.compare_torch", "--worker", *common_args,
                *(["--no-donate"] if args.no_donate else [])]
    return [sys.executable, "-m", "benchmarks.torch_step", "--setting", setting.removeprefix("torch_"), *common_args]


def _run(command: list[str], timeout: float) -> dict[str, Any]:
    """A worker's JSON result or its error; torch.compile starts from an empty inductor cache each time."""
    with tempfile.TemporaryDirectory() as tmp:
        return common.run_worker(command, timeout, ROOT, {"TORCHINDUCTOR_CACHE_DIR": str(pathlib.Path(tmp) / "inductor")})


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(rounds: list[dict[str, dict]], settings: list[str], images_per_step: int, flops: int) -> dict[str, Any]:
    """Per-setting figures over the rounds, and each PyTorch setting's JAX / PyTorch time ratios."""
    per_setting: dict[str, Any] = {}
    for s in settings:
        ok = [r[s] for r in rounds if "error" not in r[s]]
        if not ok:
            per_setting[s] = {"error": next(r[s]["error"] for r in rounds)}
            continue
        median = statistics.median(r["steps_per_s"]["median"] for r in ok)
        per_setting[s] = {
            "rounds_ok": len(ok),
            "first_call_s": _stats([r["first_call_s"] for r in ok]),
            "steps_per_s": {"median": median, "min": min(r["steps_per_s"]["min"] for r in ok),
                            "max": max(r["steps_per_s"]["max"] for r in ok)},
            "images_per_s": median * images_per_step,
            "achieved_gflop_per_s": round(median * flops / 1e9, 1),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in ok),
        }
    ratios = {}
    for s in settings[1:]:
        both = [r for r in rounds if "error" not in r["jax"] and "error" not in r[s]]
        if both:
            per_round = [r[s]["steps_per_s"]["median"] / r["jax"]["steps_per_s"]["median"] for r in both]
            ratios[s] = {**_stats(per_round), "per_round": per_round}
    return {"settings": per_setting, "ratio_jax_time_over_torch_time": ratios}


def main() -> None:
    """Runs the rounds and emits the JSON (or, with --worker, runs the JAX side in this process)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(SPECS))
    parser.add_argument("--batch", type=int, default=0, help="batch size (per side for a swap); 0: the spec's")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per process, after warm-up")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps after the first call")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds, each a fresh process per setting")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"PyTorch settings, from {','.join(SETTINGS)}")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one worker process may take")
    parser.add_argument("--no-donate", action="store_true",
                        help="compile the JAX step without the trainer's state donation (more memory)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        try:
            timing = measure_jax(args.model, args.steps, args.warmup, args.batch, not args.no_donate)
            result = {"setting": "jax", "model": args.model, **timing}
        except Exception as e:  # noqa: BLE001 - reported to the driver like a torch failure
            result = {"setting": "jax", "model": args.model, "error": f"{type(e).__name__}: {e}"[:4000]}
        common.emit(result, args.json)
        return
    unknown = set(args.settings.split(",")) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}; choose from {', '.join(SETTINGS)}")

    from benchmarks import torch_twins

    if args.batch < 0:
        parser.error(f"--batch must be positive (0 keeps the spec's), got {args.batch}")
    spec = SPECS[args.model]
    batch = args.batch or spec.batch
    images_per_step = spec.images(batch)
    flops = torch_twins.step_flops(args.model, batch)
    settings = ["jax"] + [f"torch_{s}" for s in args.settings.split(",")]
    rounds = []
    for i in range(args.rounds):
        results = {}
        for s in settings if i % 2 == 0 else settings[::-1]:
            results[s] = _run(_command(s, args), args.timeout)
            rate = results[s].get("steps_per_s", {}).get("median")
            print(f"[round {i + 1}/{args.rounds}] {s}: " + (f"{rate:.3f} steps/s" if rate else results[s]["error"][:200]),
                  file=sys.stderr, flush=True)
        rounds.append(results)
    common.emit({
        "benchmark": "compare_torch", "model": args.model, "spec": dataclasses.asdict(spec),
        "config": spec.config or "train.config.base_config() with the vae section",
        "batch_size": batch, "images_per_step": images_per_step,
        "params": {"jax": jax_param_counts(spec), "torch": torch_twins.param_counts(args.model)},
        "flops": flops, "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
        "commands": {s: "python " + " ".join(_command(s, args)[1:]) for s in settings},
        **summarise(rounds, settings, images_per_step, flops["flops_per_step"]),
        "per_round": rounds, "machine": common.machine(),
    }, args.json)


if __name__ == "__main__":
    common.entry(main)
