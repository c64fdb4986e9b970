"""Face-swap family: two identities through one autoencoder, DeepFaceLab's SAEHD losses.

Every step sees a batch of A (src) and a batch of B (dst) faces. Inputs are randomly warped and the
targets are not, so the network must learn each face, not copy pixels (data/augment.py). Each side
is reconstructed through its own path (`model(a, b)`), and the loss of a side is, as in SAEHD:

  dssim_weight * DSSIM(window int(res/11.6)), split half and half with a window of int(res/23.2)
      from 256 px up
  + mse_weight * MSE
  + eyes_mouth_weight * mean |target - output| inside the eyes-and-mouth mask (eyes_mouth_prio)
  + mask_weight * MSE(face mask, predicted mask)

the first two on target and output multiplied by the softened face mask (masked_training). Where
the data carry no masks (videos, folders) the mask is the whole image. The swap itself is never
trained: it falls out of sharing the encoder (and inter) between identities.

Pretraining as DeepFaceLab does it is two runs: one on a generic face set on both sides (random
warp off, flips on), then one on A/B with `swap.init_from` naming the first run's export and
`swap.reinit` the inter(s) to start afresh (`load_start`).

Optional adversaries, each its own named step after the autoencoder's, on the same batch:
`gan_power` trains SAEHD's U-Net patch discriminator on A's masked targets against A's
reconstructions and adds its verdict to the loss; `true_face_power` (DF) trains a discriminator
to tell A's inter codes from B's and pushes A's towards B's.

Differences from DeepFaceLab: optax's AdaBelief keeps its bias correction; no face/background
style losses; evaluation and previews use the EMA of the parameters when `ema_decay` is set.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data import augment
from train import losses, sections
from train import optim as optim_lib
from train.config import ConfigError, model_kwargs
from train.families.base import Batch, Export, Family, State, Step
from zoo import face_swap, registry, swap_discriminators

METRICS = ("recon",)  # synthetic configs add "swap_truth", which needs ground truth
_COLOR_MODES = ("none", "rct", "lct", "sot")


def section() -> ml_collections.ConfigDict:
    """The `config.swap` defaults (DeepFaceLab SAEHD's), defined in `train.sections`."""
    return sections.swap()


def dssim_windows(resolution: int) -> tuple[tuple[int, float], ...]:
    """(window, share) pairs of the structural loss: one window below 256 px, two from 256 px up."""
    if resolution < 256:
        return ((max(1, int(resolution / 11.6)), 1.0),)
    return ((int(resolution / 11.6), 0.5), (int(resolution / 23.2), 0.5))


def loss_mask(hp: ml_collections.ConfigDict, mask: jax.Array, resolution: int) -> jax.Array:
    """Where the image losses look: the softened face mask with masked training, else everywhere."""
    return losses.soften_mask(mask, resolution) if hp.masked_training else jnp.ones_like(mask)


def image_quality(prefix: str, output: jax.Array, truth: jax.Array, face: jax.Array | None,
                  window: int) -> dict[str, jax.Array]:
    """Per-example PSNR/SSIM of `output` against `truth`, and inside `face` when it is given."""
    out = {f"{prefix}_psnr": losses.psnr(output, truth),
           f"{prefix}_ssim": losses.ssim(output, truth, filter_size=window)}
    if face is not None:
        out[f"{prefix}_face_psnr"] = losses.masked_psnr(output, truth, face)
        out[f"{prefix}_face_ssim"] = losses.masked_ssim(output, truth, face, filter_size=window)
    return out


def side_loss(hp: ml_collections.ConfigDict, resolution: int, rgb: jax.Array, pred_mask: jax.Array,
              target: jax.Array, mask: jax.Array, em_mask: jax.Array | None) -> dict[str, jax.Array]:
    """Per-example loss terms of one side, named; "loss" is their weighted sum."""
    m = loss_mask(hp, mask, resolution)
    t, p = target * m, rgb * m
    structural = sum(share * losses.dssim(t, p, filter_size=w) for w, share in dssim_windows(resolution))
    mse = jnp.mean((t - p) ** 2, axis=(1, 2, 3))
    mask_mse = jnp.mean((mask - pred_mask) ** 2, axis=(1, 2, 3))
    total = hp.dssim_weight * structural + hp.mse_weight * mse + hp.mask_weight * mask_mse
    terms = {"dssim": structural, "mse": mse, "mask_mse": mask_mse}
    if hp.eyes_mouth_prio:
        if em_mask is None:
            raise ConfigError("swap.eyes_mouth_prio needs an eyes-and-mouth mask in the data (synthetic_faces masks=1)")
        terms["eyes_mouth_l1"] = jnp.mean(jnp.abs(target * em_mask - rgb * em_mask), axis=(1, 2, 3))
        total = total + hp.eyes_mouth_weight * terms["eyes_mouth_l1"]
    return terms | {"loss": total}


def make(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> Family:
    """The swap family for `config` on faces of `image_shape` (H, W, 3)."""
    hp = config.swap
    kw = model_kwargs(config.model)
    kw["dtype"] = jnp.dtype(kw.get("dtype", "float32"))
    model = registry.create_model(config.model.name, **kw)
    _validate(config, model.resolution, image_shape)
    res = model.resolution
    tx = optim_lib.make(config.optim, config.total_steps)
    nets = networks(hp, model, kw["dtype"])
    start = load_start(hp, config.model, model) if hp.init_from else None
    ema = bool(hp.ema_decay)
    steps = {"train": Step(functools.partial(train_step, nets, tx, hp, res), prefix="")}
    if hp.true_face_power:
        steps["true_face_d"] = Step(functools.partial(code_d_step, nets, tx, hp))
    if hp.gan_power:
        steps["gan_d"] = Step(functools.partial(patch_d_step, nets, tx, hp, res))
    return Family(
        init=functools.partial(init_state, nets, tx, hp, start),
        steps=steps,
        preview=functools.partial(preview, model, ema),
        preview_columns=6,
        evaluators={"recon": functools.partial(eval_recon, model, ema, hp.eval_ssim_window),
                    "swap_truth": functools.partial(eval_swap_truth, model, ema, hp.eval_ssim_window)},
        default_metrics=METRICS,
        export=functools.partial(export, config.model.name, dict(kw, dtype=jnp.dtype(kw["dtype"]).name), ema),
        train_transforms=functools.partial(train_transforms, hp),
        host_evaluators={"identity": functools.partial(eval_identity, model, ema)},
        generate=functools.partial(generate, model, ema),
    )


def _validate(config: ml_collections.ConfigDict, res: int, image_shape: tuple[int, int, int]) -> None:
    """Fail at build, with the fix, on a config the swap family cannot train."""
    hp = config.swap
    if not config.data.source_b:
        raise ConfigError("family 'swap' needs two identities: set data.source (A, src) and data.source_b (B, dst)")
    if hp.color_transfer not in _COLOR_MODES:
        raise ConfigError(f"swap.color_transfer = {hp.color_transfer!r}; choose one of {', '.join(_COLOR_MODES)}")
    if not 0.0 <= hp.ema_decay < 1.0:
        raise ConfigError(f"swap.ema_decay = {hp.ema_decay} must be in [0, 1); 0 switches the EMA off")
    if tuple(image_shape) != (res, res, 3):
        raise ConfigError(
            f"the data are {tuple(image_shape)} but model.resolution = {res}; set data.resolution = {res} "
            f"or model.resolution = {image_shape[0]}"
        )
    if hp.true_face_power and config.model.name != "swap_df":
        raise ConfigError(f"swap.true_face_power works with model swap_df only (its shared inter code); "
                          f"got {config.model.name!r}")
    if hp.gan_power < 0 or hp.true_face_power < 0:
        raise ConfigError("swap.gan_power and swap.true_face_power must be >= 0 (0 switches them off)")


def networks(hp: ml_collections.ConfigDict, model: Any, dtype: Any) -> dict[str, Any]:
    """The autoencoder "swap" plus the discriminators the config switches on ("patch_d", "code_d")."""
    nets = {"swap": model}
    if hp.gan_power:
        patch = hp.gan_patch_size or max(3, model.resolution // 8)
        nets["patch_d"] = swap_discriminators.UNetPatchDiscriminator(patch, base_dims=hp.gan_dims, dtype=dtype)
    if hp.true_face_power:
        nets["code_d"] = swap_discriminators.CodeDiscriminator(dtype=dtype)
    return nets


def init_state(nets: dict[str, Any], tx: optax.GradientTransformation, hp: ml_collections.ConfigDict,
               start: dict | None, rng: jax.Array, batch: Batch) -> State:
    """Fresh params (or `start`'s, less the `reinit` parts) and optimiser state for every network."""
    model = nets["swap"]
    res = model.resolution
    keys = dict(zip(nets, jax.random.split(rng, len(nets))))
    params = model.init(keys["swap"], *model.example_inputs())["params"]
    if start is not None:
        params = {k: v if k in hp.reinit else jax.tree.map(jnp.asarray, start[k]) for k, v in params.items()}
    all_params = {"swap": params}
    if "patch_d" in nets:
        all_params["patch_d"] = nets["patch_d"].init(keys["patch_d"], jnp.zeros((1, res, res, 3)))["params"]
    if "code_d" in nets:
        code = jax.eval_shape(lambda: model.apply({"params": params}, model.example_inputs()[0], method=_code))
        all_params["code_d"] = nets["code_d"].init(keys["code_d"], jnp.zeros(code.shape, code.dtype))["params"]
    state = {"step": jnp.int32(0), "params": all_params,
             "opt_state": {k: tx.init(v) for k, v in all_params.items()}}
    return state | ({"ema": {"swap": params}} if hp.ema_decay else {})


def forward(model: Any, codes: bool, params: Any, in_a: jax.Array, in_b: jax.Array
            ) -> tuple[dict, jax.Array | None, jax.Array | None]:
    """The two reconstructions, plus the inter codes of both sides when `codes` (the true-face D needs them)."""
    if not codes:
        return model.apply({"params": params}, in_a, in_b), None, None
    code_a = model.apply({"params": params}, in_a, method=_code)
    code_b = model.apply({"params": params}, in_b, method=_code)
    out = {"src": model.apply({"params": params}, code_a, "src", method=model.decode),
           "dst": model.apply({"params": params}, code_b, "dst", method=model.decode)}
    return out, code_a, code_b


def side_inputs(side: Batch) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None]:
    """A side's warped input, target, face mask (the whole image where the data have none) and eyes-mouth mask."""
    target = side["target"]
    mask = side.get("mask", jnp.ones(target.shape[:-1] + (1,), target.dtype))
    return side["input"], target, mask, side.get("em_mask")


def autoencoder_loss(nets: dict[str, Any], hp: ml_collections.ConfigDict, res: int, d_params: dict[str, Any],
                     params: Any, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Both sides' SAEHD losses plus the adversaries' generator terms, with `d_params` the discriminators'."""
    in_a, t_a, m_a, em_a = side_inputs(batch["a"])
    in_b, t_b, m_b, em_b = side_inputs(batch["b"])
    out, code_a, _ = forward(nets["swap"], bool(hp.true_face_power), params, in_a, in_b)
    la = side_loss(hp, res, *out["src"], t_a, m_a, em_a)
    lb = side_loss(hp, res, *out["dst"], t_b, m_b, em_b)
    metrics = {f"a_{k}": jnp.mean(v) for k, v in la.items()} | {f"b_{k}": jnp.mean(v) for k, v in lb.items()}
    loss = metrics["a_loss"] + metrics["b_loss"]
    if hp.gan_power:
        logits_fn = functools.partial(_apply, nets["patch_d"])
        metrics |= gan_generator_terms(hp, res, logits_fn, d_params["patch_d"], out["src"][0], t_a, m_a)
        loss = loss + metrics["gan_g_loss"]
    if hp.true_face_power:
        logits = nets["code_d"].apply({"params": d_params["code_d"]}, code_a)
        metrics["true_face_g_loss"] = hp.true_face_power * _bce(logits, 1.0)
        loss = loss + metrics["true_face_g_loss"]
    return loss, metrics | {"loss": loss}


def train_step(nets: dict[str, Any], tx: optax.GradientTransformation, hp: ml_collections.ConfigDict, res: int,
               state: State, batch: Batch, rng: jax.Array) -> tuple[State, dict]:
    """One autoencoder update on `autoencoder_loss`, then the EMA of its params when `ema_decay` is set."""
    del rng
    loss_fn = functools.partial(autoencoder_loss, nets, hp, res, state["params"], batch=batch)
    new, grads, metrics = optim_lib.descend(state, "swap", tx, loss_fn)
    metrics["grad_norm"] = optax.global_norm(grads)
    if hp.ema_decay:
        new["ema"] = {"swap": optax.incremental_update(new["params"]["swap"], state["ema"]["swap"],
                                                       1.0 - hp.ema_decay)}
    return new, metrics


def patch_d_loss(d: Any, params: Any, real: jax.Array, fake: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SAEHD's patch discriminator loss: BCE of centre and pixel logits, real as 1 and fake as 0, halved each."""
    real_c, real_p = d.apply({"params": params}, real)
    fake_c, fake_p = d.apply({"params": params}, fake)
    loss = 0.5 * (_bce(real_c, 1.0) + _bce(fake_c, 0.0)) + 0.5 * (_bce(real_p, 1.0) + _bce(fake_p, 0.0))
    return loss, {"loss": loss}


def patch_d_step(nets: dict[str, Any], tx: optax.GradientTransformation, hp: ml_collections.ConfigDict, res: int,
                 state: State, batch: Batch, rng: jax.Array) -> tuple[State, dict]:
    """The patch discriminator: masked A targets are real, masked A reconstructions fake."""
    del rng
    in_a, t_a, m_a, _ = side_inputs(batch["a"])
    in_b = side_inputs(batch["b"])[0]
    out = forward(nets["swap"], bool(hp.true_face_power), state["params"]["swap"], in_a, in_b)[0]
    fake = jax.lax.stop_gradient(out["src"][0])
    soft = loss_mask(hp, m_a, res)
    loss_fn = functools.partial(patch_d_loss, nets["patch_d"], real=t_a * soft, fake=fake * soft)
    new, _, metrics = optim_lib.descend(state, "patch_d", tx, loss_fn)
    return new, metrics


def code_d_loss(d: Any, params: Any, code_a: jax.Array, code_b: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The true-face discriminator's BCE: B's inter codes are real, A's fake."""
    loss = 0.5 * (_bce(d.apply({"params": params}, code_b), 1.0) + _bce(d.apply({"params": params}, code_a), 0.0))
    return loss, {"loss": loss}


def code_d_step(nets: dict[str, Any], tx: optax.GradientTransformation, hp: ml_collections.ConfigDict,
                state: State, batch: Batch, rng: jax.Array) -> tuple[State, dict]:
    """The true-face discriminator: B's inter codes are real, A's fake (pushes A codes toward B's)."""
    del rng
    in_a, in_b = side_inputs(batch["a"])[0], side_inputs(batch["b"])[0]
    _, code_a, code_b = forward(nets["swap"], bool(hp.true_face_power), state["params"]["swap"], in_a, in_b)
    code_a, code_b = jax.lax.stop_gradient((code_a, code_b))
    loss_fn = functools.partial(code_d_loss, nets["code_d"], code_a=code_a, code_b=code_b)
    new, _, metrics = optim_lib.descend(state, "code_d", tx, loss_fn)
    return new, metrics


def eval_params(ema: bool, state: State) -> Any:
    """The autoencoder's params that evaluation, previews and exports use: the EMA when it is on."""
    return (state["ema"] if ema else state["params"])["swap"]


def faces(batch: Batch, key: str) -> jax.Array:
    """uint8 faces of `batch[key]` as floats in [0, 1]."""
    return batch[key].astype(jnp.float32) / 255.0


def reconstruct(model: Any, params: Any, a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A through A's path and B through B's: the faces each side learns to rebuild."""
    out = model.apply({"params": params}, a, b)
    return out["src"][0], out["dst"][0]


def swap_faces(model: Any, params: Any, x: jax.Array, direction: str) -> jax.Array:
    """The swap of faces x in `direction` ("a2b" or "b2a"), colours only."""
    return model.apply({"params": params}, x, direction, method=model.swap)[0]


def eval_recon(model: Any, ema: bool, window: int, state: State, batch: Batch, rng: jax.Array) -> dict:
    """Per-example PSNR/SSIM of both sides' reconstructions of their unwarped faces."""
    a, b = faces(batch, "a_image"), faces(batch, "b_image")
    ra, rb = reconstruct(model, eval_params(ema, state), a, b)
    return image_quality("a_recon", ra, a, None, window) | image_quality("b_recon", rb, b, None, window)


def eval_swap_truth(model: Any, ema: bool, window: int, state: State, batch: Batch, rng: jax.Array) -> dict:
    """PSNR/SSIM of both swaps against the ground truth, over the image and inside the face, and of
    the unchanged source (the "copy" baseline a swap must beat)."""
    if "a2b_truth" not in batch:
        raise ValueError(
            "metric 'swap_truth' needs ground-truth swaps, which only single-identity synthetic_faces sources "
            "give (e.g. data.source='synthetic_faces:ids=0', data.source_b='synthetic_faces:ids=1'); "
            "use --metrics=recon for other data"
        )
    params = eval_params(ema, state)
    out = {}
    for name, source in (("a2b", "a_image"), ("b2a", "b_image")):
        x, truth, face = faces(batch, source), faces(batch, f"{name}_truth"), faces(batch, f"{name}_face")
        out |= (image_quality(name, swap_faces(model, params, x, name), truth, face, window)
                | image_quality(f"{name}_copy", x, truth, face, window))
    return out


def eval_identity(model: Any, ema: bool, state: State, source: Any, num_examples: int) -> dict[str, float]:
    """dlib identity similarity, retrieval and expression error of both swaps on held-out frames."""
    n = min(num_examples or len(source), len(source))
    rows = [source[i] for i in range(n)]
    images = {side: np.stack([r[f"{side}_image"] for r in rows]) for side in ("a", "b")}
    swap_fn = face_swap.make_swap(model)
    params = eval_params(ema, state)
    for name, side in (("a2b", "a"), ("b2a", "b")):
        images[name] = np.rint(swap_fn(params, images[side], name)[0] * 255.0).astype(np.uint8)
    return identity_report(images)


def generate(model: Any, ema: bool, state: State, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
    """Both swaps of an evaluation batch for a fake set: "a2b" of A's faces, "b2a" of B's, in [0, 1]."""
    del rng
    params = eval_params(ema, state)
    return {name: swap_faces(model, params, faces(batch, f"{side}_image"), name).astype(jnp.float32)
            for name, side in (("a2b", "a"), ("b2a", "b"))}


def preview(model: Any, ema: bool, state: State, batch: Batch, rng: jax.Array) -> jax.Array:
    """One row per pair: A | A->A | A->B | B | B->B | B->A."""
    a, b = faces(batch, "a_image")[:8], faces(batch, "b_image")[:8]
    params = eval_params(ema, state)
    ra, rb = reconstruct(model, params, a, b)
    columns = [a, ra, swap_faces(model, params, a, "a2b"), b, rb, swap_faces(model, params, b, "b2a")]
    return jnp.stack(columns, axis=1).reshape((-1,) + a.shape[1:])


def export(name: str, fields: dict[str, Any], ema: bool, state: State) -> Export:
    """The autoencoder's evaluation params with its registry name and fields, for `zoo.pretrained`."""
    return Export(name, fields, eval_params(ema, state))


def train_transforms(hp: ml_collections.ConfigDict, source_a: Any, source_b: Any) -> tuple[Any, Any]:
    """Each side's augmentation (warp, flip; colour transfer of A towards B), run in the input workers."""
    warp = dict(strength=hp.warp_strength)
    ta = augment.SwapAugment(flip=hp.flip_a, warp=hp.random_warp, color=hp.color_transfer,
                             reference=source_b if hp.color_transfer != "none" else None, warp_options=warp)
    tb = augment.SwapAugment(flip=hp.flip_b, warp=hp.random_warp, warp_options=warp)
    return ta, tb


def gan_generator_terms(hp: ml_collections.ConfigDict, resolution: int, logits_fn: Any, d_params: Any,
                        rgb: jax.Array, target: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """SAEHD's generator side of the patch GAN on A's reconstruction; "gan_g_loss" is the weighted sum.

    gan_power * (BCE(real | centre logits) + BCE(real | pixel logits)) of the masked reconstruction;
    with masked training also 1e-6 * total-variation MSE of the output and 0.02 * MSE outside the
    mask, which DeepFaceLab adds to damp the bright dots a GAN leaves where no loss looks.
    """
    soft = loss_mask(hp, mask, resolution)
    centre, pixel = logits_fn(d_params, rgb * soft)
    adversarial = _bce(centre, 1.0) + _bce(pixel, 1.0)
    total = hp.gan_power * adversarial
    if hp.masked_training:
        tv = jnp.mean(jnp.sum(jnp.square(jnp.diff(rgb, axis=1)), axis=(1, 2, 3))
                      + jnp.sum(jnp.square(jnp.diff(rgb, axis=2)), axis=(1, 2, 3)))
        outside = jnp.mean(jnp.square((rgb - target) * (1.0 - soft)))
        total = total + 1e-6 * tv + 0.02 * outside
    return {"gan_adversarial": adversarial, "gan_g_loss": total}


def _bce(logits: jax.Array, label: float) -> jax.Array:
    """Mean sigmoid cross-entropy of logits against a constant label, in float32."""
    logits = logits.astype(jnp.float32)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label)))


def _apply(module: Any, params: Any, x: jax.Array) -> Any:
    """A network's output on x: what `gan_generator_terms` takes as its logits function."""
    return module.apply({"params": params}, x)


def _code(module: Any, x: jax.Array) -> jax.Array:
    """A DF model's shared inter code of images x: what the true-face discriminator judges."""
    return module.inter_code(module.encode(x))


def load_start(hp: ml_collections.ConfigDict, model_config: ml_collections.ConfigDict, model: Any) -> dict:
    """Params to start from (`swap.init_from`, an export or a registered name), checked against the model.

    DeepFaceLab's pretraining: train on many faces on both sides, then fine-tune on A/B starting
    from those weights with the inter re-initialised (`swap.reinit = ("inter",)` for DF, ("inter_AB",
    "inter_B") for LIAE), so the code is re-learned for the two people while encoder and decoders
    keep what they learned about faces in general.
    """
    from zoo import pretrained

    try:
        loaded = pretrained.load(hp.init_from)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"swap.init_from = {hp.init_from!r}: {e}") from e
    if loaded.config["model"] != model_config.name:
        raise ConfigError(
            f"swap.init_from = {hp.init_from!r} holds a {loaded.config['model']!r} model but model.name = "
            f"{model_config.name!r}; fine-tune with the architecture that was pretrained"
        )
    mine = {k: v for k, v in model_kwargs(model_config).items() if k != "dtype"}
    theirs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in loaded.config["model_config"].items()}
    differ = sorted(k for k in mine if k in theirs and theirs[k] != mine[k])
    if differ:
        raise ConfigError(
            f"swap.init_from = {hp.init_from!r} was trained with different model fields: "
            + ", ".join(f"{k}={theirs[k]!r} (config has {mine[k]!r})" for k in differ)
        )
    unknown = sorted(set(hp.reinit) - set(loaded.params))
    if unknown:
        parts = ", ".join(sorted(loaded.params))
        raise ConfigError(f"swap.reinit names {unknown}, not parts of the model; parts: {parts}")
    return jax.device_get(loaded.params)


def identity_report(images: dict[str, np.ndarray]) -> dict[str, float]:
    """Identity and expression metrics of swaps "a2b", "b2a" of held-out real frames "a", "b" (uint8 NHWC).

    Each identity is the centroid of its real frames' dlib embeddings. A swap should sit near the
    target's centroid and far from the source's, be retrieved as the target among {A, B}, and keep
    the source frame's eyes and mouth (landmark error normalised by the inter-ocular distance).
    The copy baseline (the source frame itself) is reported beside each swap. Faces are detected
    in every image; images without a detected face are left out and the detection rate reported.
    """
    from data.faces import dlib_models
    from train.metrics import face_identity

    analyzer = dlib_models.FaceAnalyzer()
    found = {k: _analyse(analyzer, v) for k, v in images.items()}
    centroid = {side: np.mean(found[side][0][found[side][2]], axis=0) for side in ("a", "b")}
    gallery = np.stack([centroid["a"], centroid["b"]])
    out: dict[str, float] = {}
    for name, source, target, label in (("a2b", "a", "b", 1), ("b2a", "b", "a", 0)):
        emb, marks, ok = found[name]
        src_emb, src_marks, src_ok = found[source]
        both = ok & src_ok
        out[f"{name}_detect_rate"] = float(np.mean(ok))
        for prefix, e in ((name, emb[both]), (f"{name}_copy", src_emb[both])):
            scores = face_identity.identity_scores(e, centroid[target], centroid[source])
            out |= {f"{prefix}_{k}": float(v) for k, v in scores.items()}
            labels = np.full(len(e), label)
            accuracy = face_identity.retrieval_accuracy(e, labels, gallery, np.array([0, 1]))
            out[f"{prefix}_id_retrieval"] = float(accuracy)
        out[f"{name}_expression_error"] = float(np.mean(face_identity.expression_error(src_marks[both], marks[both])))
        out[f"{name}_num_faces"] = float(np.sum(both))
    return out


def _analyse(analyzer: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dlib embeddings [N,128], 68 landmarks [N,68,2] and a found-a-face flag [N] for each image."""
    emb = np.zeros((len(images), 128), np.float32)
    marks = np.zeros((len(images), 68, 2), np.float32)
    ok = np.zeros(len(images), bool)
    for i, image in enumerate(images):
        box = analyzer.largest_face(image)
        if box is not None:
            emb[i], marks[i], ok[i] = analyzer.embedding(image, box), analyzer.landmarks(image, box), True
    return emb, marks, ok
