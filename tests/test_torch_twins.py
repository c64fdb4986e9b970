"""PyTorch twins (benchmarks/torch_twins.py): parameter counts equal the zoo's, shapes and losses match, specs match configs."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

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

SHAPES = {  # net -> output shapes at batch 2, NCHW
    "vae_conv64": {"vae": [(2, 3, 64, 64), (2, 32), (2, 32)]},
    "df64": {"swap": [(2, 3, 64, 64), (2, 1, 64, 64)] * 2},
    "df128": {"swap": [(2, 3, 128, 128), (2, 1, 128, 128)] * 2},
    "dcgan64": {"G": [(2, 3, 64, 64)], "D": [(2,)]},
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


@pytest.mark.parametrize("name", sorted(SPECS))
def test_forward_shapes_at_batch_2(name):
    twin = torch_twins.make(name)
    inputs = twin.inputs(twin.batch(2))
    with torch.no_grad():
        assert {k: _shapes(net(*inputs[k])) for k, net in twin.nets.items()} == SHAPES[name]


NARROW = {"vae": dict(channels=(4, 8), hidden=16), "swap": dict(ae_dims=16, e_dims=4, d_dims=4, d_mask_dims=2),
          "gan": dict(ngf=8)}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_two_training_steps_change_every_net(name):
    """Each spec's step (optimiser, schedule, clip, loss terms), on narrow nets to stay fast."""
    spec = SPECS[name]
    spec = dataclasses.replace(spec, fields=spec.fields | NARROW[spec.family], disc=spec.disc | (
        {"ndf": 8} if spec.disc else {}))
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
