"""PyTorch twins (benchmarks/torch_twins.py): parameter counts equal the zoo's, shapes and losses match, specs match configs."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import import_torch

torch = import_torch()

from benchmarks import compare_torch, torch_twins  # noqa: E402
from benchmarks.__main__ import names  # noqa: E402
from benchmarks.twin_specs import SPECS  # noqa: E402
from train import losses  # noqa: E402
from train.families import gan as gan_family  # noqa: E402
from zoo import layers, registry  # noqa: E402

SHAPES = {  # net -> output shapes at batch 2, NCHW
    "vae_conv64": {"vae": [(2, 3, 64, 64), (2, 32), (2, 32)]},
    "df64": {"swap": [(2, 3, 64, 64), (2, 1, 64, 64)] * 2},
    "df128": {"swap": [(2, 3, 128, 128), (2, 1, 128, 128)] * 2},
    "dcgan64": {"G": [(2, 3, 64, 64)], "D": [(2,)]},
    "stylegan2_64": {"G": [(2, 3, 64, 64)], "D": [(2,)]},  # stylegan2_256's forward is too slow here
}


def _shapes(out) -> list[tuple[int, ...]]:
    if isinstance(out, torch.Tensor):
        return [tuple(out.shape)]
    values = out.values() if isinstance(out, dict) else out
    return [s for v in values for s in _shapes(v)]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_param_counts_equal_the_zoo_models(name):
    assert torch_twins.param_counts(name) == compare_torch.jax_param_counts(SPECS[name])


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_matches_the_config_it_mirrors(name):
    compare_torch.check_spec(SPECS[name], compare_torch.jax_config(SPECS[name]))


def test_check_spec_names_a_drifted_field():
    spec = SPECS["df64"]
    drifted = dataclasses.replace(spec, fields=dict(spec.fields, e_dims=32), batch=8)
    with pytest.raises(ValueError, match=r"batch_size: twin 8, config 16.*swap_df.e_dims: twin 32, config 24"):
        compare_torch.check_spec(drifted, compare_torch.jax_config(spec))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_forward_shapes_at_batch_2(name):
    twin = torch_twins.make(name)
    inputs = twin.inputs(twin.batch(2))
    with torch.no_grad():
        assert {k: _shapes(net(*inputs[k])) for k, net in twin.nets.items()} == SHAPES[name]


NARROW = {"vae": dict(channels=(4, 8), hidden=16), "swap": dict(ae_dims=16, e_dims=4, d_dims=4, d_mask_dims=2),
          "gan": dict(ngf=8), "stylegan2": dict(channel_base=256, channel_max=8, latent_dim=16, w_dim=16),
          "reenact": dict(num_kp=3, kp_block_expansion=4, kp_max_features=16, dm_block_expansion=4, dm_max_features=16,
                          gen_block_expansion=4, gen_max_features=16, gen_num_bottleneck_blocks=1)}
NARROW_D = {"gan": dict(ndf=8), "stylegan2": dict(channel_base=256, channel_max=8)}


def narrow(name: str):
    """SPECS[name] with narrow nets, so its steps run in a fraction of a second."""
    spec = SPECS[name]
    kind = "stylegan2" if spec.model == "stylegan2_g" else spec.family
    return dataclasses.replace(spec, fields=spec.fields | NARROW[kind], disc=spec.disc | NARROW_D.get(kind, {}))


@pytest.mark.parametrize("name", sorted(set(SPECS) - {"stylegan2_256", "fomm256"}))  # the 64 px entries' code
def test_two_training_steps_change_every_net(name):
    """Each spec's step (optimiser, schedule, clip, loss terms), on narrow nets to stay fast.

    StyleGAN2's first step is the one with both lazy steps (R1 and path length) due.
    """
    spec = narrow(name)
    torch.manual_seed(0)
    twin = torch_twins.make(spec)
    before = {k: [p.detach().clone() for p in net.parameters()] for k, net in twin.nets.items()}
    batch = twin.batch(2)
    for _ in range(2):  # a warm-up schedule's first learning rate is 0
        twin.step(batch)
    for k, net in twin.nets.items():
        after = list(net.parameters())
        assert all(torch.isfinite(p).all() for p in after), k
        assert any(not torch.equal(a, b) for a, b in zip(after, before[k])), k


@pytest.mark.parametrize("window", [5, 11])
def test_dssim_equals_the_families_loss(window):
    rng = np.random.default_rng(0)
    x, y = rng.random((2, 32, 32, 3), np.float32), rng.random((2, 32, 32, 3), np.float32)
    ours = torch_twins.dssim(*(torch.from_numpy(v).permute(0, 3, 1, 2) for v in (x, y)), torch_twins.gaussian(window, 1.5))
    np.testing.assert_allclose(ours.numpy(), losses.dssim(jnp.asarray(x), jnp.asarray(y), filter_size=window), atol=1e-5)


def test_soften_mask_equals_the_families():
    mask = (np.random.default_rng(1).random((2, 64, 64, 1)) > 0.5).astype(np.float32)
    ours = torch_twins.soften_mask(torch.from_numpy(mask).permute(0, 3, 1, 2), 64).permute(0, 2, 3, 1)
    np.testing.assert_allclose(ours.numpy(), losses.soften_mask(jnp.asarray(mask), 64), atol=1e-6)


def test_adabelief_equals_optax():
    rng = np.random.default_rng(2)
    start, grads = rng.normal(size=5).astype(np.float32), rng.normal(size=(3, 5)).astype(np.float32)
    param = torch.nn.Parameter(torch.from_numpy(start.copy()))
    opt = torch_twins.AdaBelief([param], 1e-2, (0.9, 0.999))
    tx, p = optax.adabelief(1e-2), jnp.asarray(start)
    state = tx.init(p)
    for g in grads:
        param.grad = torch.from_numpy(g)
        opt.step()
        updates, state = tx.update(jnp.asarray(g), state, p)
        p = optax.apply_updates(p, updates)
    np.testing.assert_allclose(param.detach().numpy(), p, rtol=1e-5, atol=1e-6)


def test_flops_count_the_vae_layers_from_shapes():
    macs = (32 * 32 * 32 * 3 * 16 + 16 * 16 * 64 * 32 * 16  # 4x4 stride-2 convs: output positions x in x out x taps
            + 16384 * 256 + 256 * 64 + 32 * 256 + 256 * 16384  # dense layers
            + 16 * 16 * 64 * 64 * 16 + 32 * 32 * 64 * 32 * 16  # transposed convs: input positions x in x out x taps
            + 64 * 64 * 32 * 3 * 9)  # 3x3 head
    flops = torch_twins.step_flops("vae_conv64")
    assert flops["forward_macs_per_example"] == {"vae": macs}
    assert flops["flops_per_step"] == 6 * macs * 128
    assert torch_twins.step_flops("vae_conv64", batch=4)["flops_per_step"] == 6 * macs * 4


def test_dcgan_flops_count_both_steps():
    flops = torch_twins.step_flops("dcgan64")
    g = 100 * 8192 + 16 * (4 * 4 * 512 * 256 + 8 * 8 * 256 * 128 + 16 * 16 * 128 * 64 + 32 * 32 * 64 * 3)
    d = 16 * (32 * 32 * 3 * 64 + 16 * 16 * 64 * 128 + 8 * 8 * 128 * 256 + 4 * 4 * 256 * 512 + 512)
    assert flops["forward_macs_per_example"] == {"G": g, "D": d}
    assert flops["flops_per_step"] == 128 * (2 * g * (1 + 3) + 2 * d * (3 + 3 + 2))


def test_summary_ratios_are_jax_time_over_torch_time():
    def result(rate):
        return {"first_call_s": 1.0, "steps_per_s": {"median": rate, "min": rate / 2, "max": rate * 2}, "peak_rss_mib": 10.0}

    rounds = [{"jax": result(2.0), "torch_eager": result(1.0)}, {"jax": result(1.0), "torch_eager": {"error": "x"}},
              {"jax": result(4.0), "torch_eager": result(1.0)}]
    out = compare_torch.summarise(rounds, ["jax", "torch_eager"], SPECS["df64"].images_per_step, flops=10**9)
    assert out["ratio_jax_time_over_torch_time"]["torch_eager"]["per_round"] == [0.5, 0.25]
    assert out["settings"]["jax"]["images_per_s"] == 2.0 * 32
    assert out["settings"]["torch_eager"]["rounds_ok"] == 2


def test_runner_lists_the_benchmarks_not_the_helpers():
    assert {"compare_torch", "train_step", "layers", "input_pipeline"} <= set(names())
    assert not {"common", "torch_twins", "twin_specs"} & set(names())


@pytest.mark.slow  # 30-110 s on 2 busy cores: the fast step stays under 15 min
def test_compare_torch_runs_both_workers_at_another_batch_and_writes_json(tmp_path):
    out = tmp_path / "out.json"
    command = [sys.executable, "-m", "benchmarks", "compare_torch", "--model", "vae_conv64", "--batch", "4",
               "--steps", "2", "--warmup", "0", "--rounds", "1", "--settings", "eager", "--json", str(out)]
    subprocess.run(command, check=True, cwd=compare_torch.ROOT, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    assert result["batch_size"] == 4 and result["images_per_step"] == 4
    assert result["flops"]["flops_per_step"] == torch_twins.step_flops("vae_conv64")["flops_per_step"] // 32
    assert all("--batch" in c and c.endswith("--batch 4") for c in result["commands"].values())
    for setting in ("jax", "torch_eager"):
        assert result["settings"][setting]["steps_per_s"]["median"] > 0, result["per_round"]
    assert result["ratio_jax_time_over_torch_time"]["torch_eager"]["median"] > 0


def test_stylegan2_step_runs_the_lazy_steps_on_the_trainers_schedule(monkeypatch):
    """R1 when count % 16 == 0 and path length when count % 4 == 0, as train.trainer runs "D_r1" and "G_pl"."""
    torch.manual_seed(0)
    twin = torch_twins.make(narrow("stylegan2_64"))
    assert SPECS["stylegan2_64"].steps_every == {"D": 1, "D_r1": 16, "G": 1, "G_pl": 4}
    calls = []
    for lazy in ("_r1_loss", "_pl_loss"):
        original = getattr(twin, lazy)
        monkeypatch.setattr(twin, lazy, lambda *a, lazy=lazy, original=original: calls.append(
            (lazy, twin.count)) or original(*a))
    w_avg = twin.nets["G"].mapping.w_avg.clone()
    batch = twin.batch(4)
    for _ in range(5):
        twin.step(batch)
    assert calls == [("_r1_loss", 0), ("_pl_loss", 0), ("_pl_loss", 4)]
    assert float(twin.pl_mean) > 0 and not torch.equal(twin.nets["G"].mapping.w_avg, w_avg)
    params = list(twin.nets["G"].parameters())
    assert not all(torch.equal(e, p) for e, p in zip(twin.ema, params)), "the EMA lags the params after ramp-up"


def test_stylegan2_lazy_adam_rescales_each_net_by_its_interval():
    twin = torch_twins.make(narrow("stylegan2_64"))
    for net, every in (("D", 16), ("G", 4)):
        group = twin.opts[net].param_groups[0]
        ratio = every / (every + 1)
        assert group["lr"] == pytest.approx(0.0025 * ratio)
        assert group["betas"] == pytest.approx((0.0, 0.99**ratio))


def _twin_name(path: str, log_res: int) -> str:
    """A zoo param path's name in the twin: synthesis b{R} -> blocks.i, mapping fc{i} -> mapping.fcs.i, D's b4 -> top."""
    parts = path.split(".")
    if parts[0] == "mapping":
        return ".".join(["mapping", "fcs", parts[1][2:], *parts[2:]])
    if parts[0] == "synthesis":
        return ".".join(["blocks", str(int(math.log2(int(parts[1][1:]))) - 2), *parts[2:]])
    if parts[0] == "b4":
        return ".".join(parts[1:])
    return ".".join(["blocks", str(log_res - int(math.log2(int(parts[0][1:])))), *parts[1:]])


def _zoo_params(shapes: dict, twin_net, log_res: int, prefix: str = "") -> dict:
    """The twin's weights as the zoo's param tree (NHWC, HWIO, dense [in, out], the 4x4 constant [4, 4, C])."""
    state = twin_net.state_dict()
    out = {}
    for key, leaf in shapes.items():
        path = f"{prefix}{key}"
        if isinstance(leaf, dict):
            out[key] = _zoo_params(leaf, twin_net, log_res, path + ".")
            continue
        v = state[_twin_name(path, log_res)].numpy()
        if v.ndim == 4:
            v = v.transpose(2, 3, 1, 0)
        elif v.ndim == 3:
            v = v.transpose(1, 2, 0)
        elif path == "b4.fc.weight":  # the twin flattens (c h w), the zoo (h w c)
            v = v.reshape(v.shape[0], -1, 4, 4).transpose(2, 3, 1, 0).reshape(-1, v.shape[0])
        elif v.ndim == 2:
            v = v.T
        assert v.shape == leaf.shape, (path, v.shape, leaf.shape)
        out[key] = jnp.asarray(v)
    return out


@pytest.mark.slow  # 30-110 s on 2 busy cores: the fast step stays under 15 min
def test_stylegan2_twin_computes_the_zoo_models_on_the_same_weights():
    """With the twin's (perturbed) weights in the zoo's models, G(z) and D(x) agree with zoo.stylegan2.

    This checks what shapes and counts cannot: modulation and demodulation, the transposed conv's
    orientation and FIR gains, the D's FIR downsampling and skip, minibatch stddev over consecutive
    groups (batch 8, groups of 4), equalised-lr scales, biases and the mapping's lr multiplier;
    and the lazy R1 and path-length losses (double backward) against the GAN family's r1_penalty and
    path_lengths on J^T y from jax.vjp. Noise strengths stay 0 (the twin draws its own noise); x-flips
    and style mixing are off and z and y are shared, so both see the same inputs.
    """
    spec = narrow("stylegan2_64")
    spec = dataclasses.replace(spec, hparams=spec.hparams | {"mirror": False, "style_mixing": 0.0})
    torch.manual_seed(0)
    twin = torch_twins.make(spec)
    with torch.no_grad():
        for name, p in [*twin.nets["G"].named_parameters(), *twin.nets["D"].named_parameters()]:
            if not name.endswith("noise_strength"):
                p.add_(0.1 * torch.randn_like(p))
    models = {"G": registry.create_model("stylegan2_g", image_shape=spec.image, **spec.fields),
              "D": registry.create_model("stylegan2_d", image_shape=spec.image,
                                         **{k: v for k, v in spec.disc.items() if k != "name"})}
    variables = {}
    for net, model in models.items():
        shapes = jax.eval_shape(model.init, jax.random.key(0), *model.example_inputs())
        variables[net] = {"params": _zoo_params(shapes["params"], twin.nets[net], 6)} | {
            c: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), v) for c, v in shapes.items() if c != "params"}
    rng = np.random.default_rng(0)
    z = rng.normal(size=(8, spec.fields["latent_dim"])).astype(np.float32)
    pixels = rng.integers(0, 256, size=(8, *spec.image), dtype=np.uint8)
    x = pixels.astype(np.float32) / 127.5 - 1.0
    with layers.use_forms("plain"):
        images = jax.jit(lambda v, z: models["G"].apply(v, z, noise_mode="none"))(variables["G"], z)
        logits = jax.jit(models["D"].apply)(variables["D"], x)
        r1 = gan_family.r1_penalty(lambda v: models["D"].apply(variables["D"], v), jnp.asarray(x))
    with torch.no_grad():
        ours_images = twin.nets["G"](torch.from_numpy(z)).permute(0, 2, 3, 1).numpy()
        ours_logits = twin.nets["D"](torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(ours_images, images, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours_logits, logits, rtol=1e-4, atol=1e-4)
    ours_r1 = twin._r1_loss(torch.from_numpy(pixels).permute(0, 3, 1, 2)).item()
    assert ours_r1 == pytest.approx(0.5 * spec.hparams["r1_gamma"] * 16 * float(r1), rel=1e-4)

    y = rng.normal(size=(4, *spec.image)).astype(np.float32) / 64  # N(0, I) / sqrt(H W), path length's batch of 8 / 2
    gen, g_vars = models["G"], variables["G"]

    @jax.jit
    def path_lengths(v, z, y):
        ws = gen.apply(v, z, method=gen.map_latents)
        _, vjp = jax.vjp(lambda w: gen.apply(v, w, None, "none", method=gen.synthesize), ws)
        return gan_family.path_lengths(vjp(y)[0])

    with layers.use_forms("plain"):
        lengths = np.asarray(path_lengths(g_vars, z[:4], y))
    pl_mean = 0.01 * lengths.mean()
    twin._z = lambda n: torch.from_numpy(z[:n])
    with mock.patch.object(torch, "randn_like", lambda images: torch.from_numpy(y).permute(0, 3, 1, 2) * 64):
        ours_pl = twin._pl_loss(8).item()
    assert ours_pl == pytest.approx(2.0 * 4 * np.mean((lengths - pl_mean) ** 2), rel=1e-4)
    assert float(twin.pl_mean) == pytest.approx(pl_mean, rel=1e-5)


def _jaxpr_macs(jaxpr, dots: bool = True) -> int:
    """MACs of a jaxpr's dense products (unless `dots` is False) and non-grouped convolutions (the depthwise FIR
    filters left out).

    A convolution with lhs dilation is a transposed conv: input positions x taps x in x out, as
    `FLOP_CONVENTION` counts it; any other: output positions x taps x in per group.
    """
    from jax.extend import core

    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated" and eqn.params["feature_group_count"] == 1:
            lhs, rhs = (v.aval.shape for v in eqn.invars)
            out = eqn.outvars[0].aval.shape
            spec = eqn.params["dimension_numbers"].rhs_spec
            taps = math.prod(rhs[d] for d in spec[2:])
            if any(d != 1 for d in eqn.params["lhs_dilation"]):
                total += math.prod(lhs) * taps * rhs[spec[0]]
            else:
                total += math.prod(out) * taps * rhs[spec[1]]
        elif name == "dot_general" and dots:
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
        for sub in core.jaxprs_in_params(eqn.params):
            total += _jaxpr_macs(sub, dots)
    return total


def test_stylegan2_macs_equal_the_zoo_models_products_and_convs():
    """The twin's counted MACs per example equal those of the zoo models' traced forward passes (plain forms)."""
    spec = SPECS["stylegan2_64"]
    twin = torch_twins.make(spec)
    inputs = twin.inputs(twin.batch(1))
    gen, disc = compare_torch._models(spec, compare_torch.jax_config(spec)).values()
    g_vars = jax.eval_shape(gen.init, jax.random.key(0), *gen.example_inputs())
    d_vars = jax.eval_shape(disc.init, jax.random.key(0), *disc.example_inputs())
    z = jax.ShapeDtypeStruct((1, spec.fields["latent_dim"]), jnp.float32)
    x = jax.ShapeDtypeStruct((1, *spec.image), jnp.float32)
    with layers.use_forms("plain"):
        g = _jaxpr_macs(jax.make_jaxpr(lambda v, z: gen.apply(v, z))(g_vars, z).jaxpr)
        mapping = _jaxpr_macs(jax.make_jaxpr(lambda v, z: gen.apply(v, z, method=gen.map_latents))(g_vars, z).jaxpr)
        d = _jaxpr_macs(jax.make_jaxpr(lambda v, x: disc.apply(v, x))(d_vars, x).jaxpr)
    assert torch_twins.forward_macs(twin.nets["G"], *inputs["G"]) == g
    assert torch_twins.forward_macs(twin.nets["G"].mapping, *inputs["G"]) == mapping
    assert torch_twins.forward_macs(twin.nets["D"], *inputs["D"]) == d


def test_stylegan2_flops_count_both_nets_steps_over_the_schedule():
    flops = torch_twins.step_flops("stylegan2_64")
    macs = flops["forward_macs_per_example"]
    g, m, d = macs["G"], macs["G.mapping"], macs["D"]
    assert m == 64 * 64 * 2  # two 64 -> 64 mapping layers
    per_16 = 32 * 2 * (16 * ((g + m) + 6 * d)  # D: G forward (a second z's mapping for mixing), D on real and fake
                       + 6 * d  # one R1: D's double backward
                       + 16 * (3 * (g + m) + 2 * d))  # G: G forward-backward, D forward + input gradient
    per_16 += 16 * 2 * 4 * 6 * (g + m)  # four path-length steps on half the batch: G's double backward
    assert flops["flops_per_step"] == per_16 // 16
    assert torch_twins.step_flops("stylegan2_64", batch=8)["flops_per_step"] == per_16 // 16 // 4


def test_check_spec_refuses_the_stylegan2_configs_ada_without_the_specs_override():
    spec = SPECS["stylegan2_64"]
    assert compare_torch.jax_config(spec).gan.ada_target == 0.0
    plain = dataclasses.replace(spec, overrides={})
    with pytest.raises(ValueError, match=r"gan.ada_target: twin 0.0, config 0.6"):
        compare_torch.check_spec(plain, compare_torch.jax_config(plain))
    with pytest.raises(ValueError, match="names no field"):
        compare_torch.jax_config(dataclasses.replace(spec, overrides={"gan.ada_targte": 0.0}))


# ---------------------------------------------------------------------------------------------------
# FOMM (the reenact family's step)


def _fomm_zoo_params(shapes: dict, twin_net) -> dict:
    """The twin's weights as zoo.reenact's param tree: up{i}/down{i}/res{i} -> up.i ..., HWIO kernels, BN scale."""
    import re

    from flax.traverse_util import flatten_dict, unflatten_dict

    state = twin_net.state_dict()
    out = {}
    for path, leaf in flatten_dict(shapes).items():
        name = ".".join(re.sub(r"^(down|up|res)(\d+)$", r"\1.\2", p) for p in path[:-1])
        name += "." + {"kernel": "weight", "scale": "weight"}.get(path[-1], path[-1])
        v = state[name].numpy()
        v = v.transpose(2, 3, 1, 0) if v.ndim == 4 else v
        assert v.shape == leaf.shape, (path, v.shape, leaf.shape)
        out[path] = jnp.asarray(v)
    return unflatten_dict(out)


def _fomm_pair(spec, batch: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (batch, *spec.image), dtype=np.uint8) for _ in range(2)]


@pytest.mark.slow  # 15-40 s on 2 busy cores
def test_fomm_twin_computes_the_zoo_model_and_the_familys_losses_on_the_same_weights(monkeypatch):
    """With the twin's (perturbed) weights in zoo.reenact's fomm, the family's training pass and loss terms agree.

    Checks what parameter counts cannot: layer order, the hourglass skips, the Jacobian head, the
    sparse motions, grid_sample's align_corners and padding conventions (zeros in the models,
    reflection for the warped frame), batch norm in training mode, the anti-aliased pyramid, the
    DSSIM windows, and the random warp's closed-form Jacobian against `jax.jacfwd`.
    """
    from train.families import reenact as family
    from zoo import warp

    spec = narrow("fomm64")
    torch.manual_seed(0)
    twin = torch_twins.make(spec)
    net = twin.nets["reenactor"]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model = registry.create_model("fomm", image_shape=spec.image, **spec.fields)
    shapes = jax.eval_shape(model.init, jax.random.key(0), *model.example_inputs())
    params = _fomm_zoo_params(shapes["params"], net)
    stats = {"batch_stats": jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes["batch_stats"])}
    source_px, driving_px = _fomm_pair(spec)
    t = torch_twins.random_tps(4, 0.05, 0.005, 5)
    t_jax = warp.RandomTPS(*(jnp.asarray(v.numpy()) for v in t))
    source, driving = (jnp.asarray(x, jnp.float32) / 255.0 for x in (source_px, driving_px))
    transformed = warp.random_tps_frame(t_jax, driving)

    def nchw(x):
        return torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous()

    ours_transformed = torch_twins.random_tps_frame(t, nchw(driving))
    np.testing.assert_allclose(ours_transformed.permute(0, 2, 3, 1).numpy(), transformed, atol=5e-5)
    out, _ = jax.jit(lambda p, s, d, t: family.apply_train(model, p, stats, s, d, t, None, 0.0, False, False,
                                                           method=family._training_pass))(params, source, driving,
                                                                                          transformed)
    with torch.no_grad():
        ours = net.train()(nchw(source), nchw(driving), nchw(transformed))
    prediction = ours["prediction"].permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(prediction, out["prediction"], atol=1e-3)  # a few pixels: float32 rounding of flows
    assert np.abs(prediction - out["prediction"]).mean() < 1e-5
    for kp in ("kp_driving", "kp_transformed"):
        for key in ("value", "jacobian"):
            np.testing.assert_allclose(ours[kp][key].numpy(), out[kp][key], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(torch_twins.random_tps_jacobian(t, ours["kp_transformed"]["value"]).numpy(),
                               warp.random_tps_jacobian(t_jax, out["kp_transformed"]["value"]), rtol=1e-4, atol=1e-5)

    hp = spec.hparams
    recon = jnp.mean(family.l1_dssim_pyramid(out["prediction"], driving, hp["scales"], 10.0, 10.0))
    eq = family.equivariance_loss(out["kp_driving"], out["kp_transformed"], t_jax, True)
    expected = float(recon + 10.0 * eq["equivariance_value"] + 10.0 * eq["equivariance_jacobian"])
    monkeypatch.setattr(twin, "_warp", lambda batch: t)
    with torch.no_grad():
        loss = twin._loss(*(torch.from_numpy(x).permute(0, 3, 1, 2) for x in (source_px, driving_px))).item()
    assert loss == pytest.approx(expected, rel=1e-4)


def test_fomm_twin_step_lowers_its_loss_on_a_fixed_batch(monkeypatch):
    torch.manual_seed(0)
    twin = torch_twins.make(narrow("fomm64"))
    t = torch_twins.random_tps(4, 0.05, 0.005, 5)
    monkeypatch.setattr(twin, "_warp", lambda batch: t)
    batch = twin.batch(4)
    pixels = (batch["source_image"], batch["driving_image"])
    before = twin.loss(*pixels).item()
    for _ in range(5):
        twin.step(batch)
    assert twin.count == 5
    assert twin.loss(*pixels).item() < before


def test_check_spec_refuses_a_fomm_spec_that_drifted_from_its_config():
    spec = SPECS["fomm64"]
    drifted = dataclasses.replace(spec, fields=dict(spec.fields, num_kp=5),
                                  hparams=dict(spec.hparams, equivariance_jacobian=1.0), image=(128, 128, 3))
    with pytest.raises(ValueError, match=r"reenact.equivariance_jacobian: twin 1.0, config 10.0.*"
                                         r"fomm.num_kp: twin 5, config 10.*image size.*twin 128, config 64"):
        compare_torch.check_spec(drifted, compare_torch.jax_config(spec))


def test_fomm_macs_equal_the_zoo_training_passs_convolutions():
    """The twin's counted MACs per pair equal the convs of the family's traced training pass (plain forms); the zoo's
    anti-aliasing is an einsum and its heatmap and flow sums products, left out on both sides as the convention says."""
    from train.families import reenact as family

    spec = SPECS["fomm64"]
    (model,) = compare_torch._models(spec, compare_torch.jax_config(spec)).values()
    variables = jax.eval_shape(model.init, jax.random.key(0), *model.example_inputs())
    x = jax.ShapeDtypeStruct((1, *spec.image), jnp.float32)

    def training_pass(v, s, d, t):
        return model.apply(v, s, d, t, None, 0.0, False, False, method=family._training_pass, mutable=["batch_stats"])

    with layers.use_forms("plain"):
        zoo = _jaxpr_macs(jax.make_jaxpr(training_pass)(variables, x, x, x).jaxpr, dots=False)
    flops = torch_twins.step_flops("fomm64")
    assert flops["forward_macs_per_example"] == {"reenactor": zoo}
    assert flops["flops_per_step"] == 16 * 6 * zoo
    assert flops["example"] == "a (source, driving) pair"


def test_the_gpu_benchmark_leaves_the_256px_steps_to_their_own_calls():
    from benchmarks import gpu

    assert "fomm64" in gpu.default_models() and not {"fomm256", "stylegan2_256"} & set(gpu.default_models())
    assert "fomm256" in (compare_torch.ROOT / "benchmarks" / "gpu.sh").read_text()


@pytest.mark.slow  # two compiles of the 64 px step on 2 busy cores
def test_the_gpu_worker_runs_the_fomm_step_in_bf16_at_a_small_batch():
    """gpu.py's fomm256 entry on CPU at a tiny size: fomm64 is the same family step, spec and code at 64 px."""
    from benchmarks import gpu

    run = gpu.measure("fomm64", "bfloat16", batch=2, steps=1, warmup=0)
    assert run["dtype"] == "bfloat16" and run["batch_size"] == 2 and run["steps_per_s"]["median"] > 0
    assert run["flops_per_step"] == torch_twins.step_flops("fomm64")["flops_per_step"] // 8
    assert 0.5 < run["xla_flops_per_step"] / run["flops_per_step"] < 3
