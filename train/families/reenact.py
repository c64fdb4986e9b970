"""Reenactment family: FOMM and TPSMM (`zoo.reenact`) trained on (source, driving) frames of one video.

Batches come from `video_pairs:` ({"source_image", "driving_image"} uint8), both frames mirrored
(`reenact.hflip`) and recoloured (`reenact.jitter`) alike in the input workers, as FOMM's
(`data.pair_augment`). The network animates the source with the motion between the two frames'
keypoints and must reproduce the driving frame; the loss, as the papers' (reference part A), is the sum of

- reconstruction over an anti-aliased pyramid (`reenact.scales`, FOMM's 1, 1/2, 1/4, 1/8): with
  `reenact.vgg_weights` naming torchvision's vgg19 file, the VGG19 perceptual pyramid (L1 of relu1_1 ..
  relu5_1, `perceptual_weights` 10 each; `train.perceptual`; the VGG's variables ride in the state as
  "frozen", an input of the compiled step rather than its constants), logged as `loss/perceptual_vgg19`;
  otherwise `l1_weight` L1 + `dssim_weight` DSSIM at every scale, logged as `loss/l1_dssim`, so two runs
  are never compared across the two without their names saying so. The DSSIM window shrinks with the
  map (`dssim_window`: 11 px from 22 px up, odd, at least 3 and at most the side);
- equivariance under FOMM's random warp T (`zoo.warp.random_tps_frame`, one per example keyed by its
  global index, so every device layout draws the same): |kp(D) - T(kp(T D))| (weight
  `equivariance_value`) and, for fomm with Jacobians, |I - J(D)^-1 J_T J(T D)| (`equivariance_jacobian`);
- tps: the warp loss, L1 between the driving frame's masked encoder maps and the warped source maps
  (`warp_weight`), and with the background predictor |A(s, d) A(d, s) - I| (`bg_weight`), the predictor
  switched on from `bg_start_step` (TPSMM: epoch 10; before, its affine is the identity and its
  statistics are kept); TPSMM's contribution-map dropout while step < `dropout_steps`, p growing from
  `dropout_start_p` by `dropout_p` every `dropout_ramp_steps` steps up to `dropout_p`;
- with `gan_weight` > 0, FOMM's LSGAN: a multi-scale patch discriminator (`zoo.reenact_discriminator`)
  on the driving frame (real) and the prediction (fake), each with the driving keypoints' heatmaps,
  (1 - D(fake))^2 times `gan_weight` plus feature matching (`feature_matching`, L1 per block), and its
  own step "discriminator" ((1 - D(real))^2 + D(fake)^2) on the prediction of the updated reenactor
  (FOMM's uses the prediction made before the update: a second forward pass here keeps the steps apart).

Adam (FOMM: lr 2e-4, betas 0.5, 0.999) with the learning rate multiplied by `lr_decay` at the
`lr_milestones` fractions of total_steps (FOMM: epochs 60 and 90 of 100); `optim.weight_decay` with
Adam is added to the gradient, as torch.optim.Adam's weight_decay (TPSMM: 1e-4). Batch-norm statistics
(every forward pass in training updates them, as in FOMM) are averaged with `parallel.pmean`, and the
models normalise over the global batch under pmap, so one device, sharded jit and pmap train the same
model; TPSMM's dropout draws its masks per replica, which holds the equality only with it off.

Evaluation: `recon` (per example: L1 in [0, 1] and PSNR of the driving frame's reconstruction from the
source, FOMM's absolute-keypoint reconstruction, beside the source frame copied as the baseline), and on
whole held-out clips `reenact` and `reenact_truth` (`train.metrics.reenact`, through `zoo.animate`).
Exports hold the reenactor's params (its EMA when on) and batch statistics under its registry name.
"""
from __future__ import annotations

import colorsys
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data import pair_augment
from train import losses, parallel, sections
from train import optim as optim_lib
from train.config import model_kwargs
from train.families.base import Batch, Export, Family, State, Step
from train.metrics import reenact as reenact_metrics
from zoo import reenact, registry, warp
from zoo.errors import ConfigError
from zoo.reenact_discriminator import MultiScaleDiscriminator

NET = "reenactor"
DISC = "discriminator"
BATCH_STATS = reenact.BATCH_STATS
SPECTRAL = "spectral"
VGG = "vgg19"
RECON_NAMES = {True: "perceptual_vgg19", False: "l1_dssim"}
METRICS = ("recon",)


def section() -> ml_collections.ConfigDict:
    """The `config.reenact` defaults, defined in `train.sections`."""
    return sections.reenact()


def make(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> Family:
    """The reenactment family for `config`, on frames of `image_shape` (H, W, C)."""
    hp = config.reenact
    _validate(config, image_shape)
    kw = _model_fields(config, image_shape)
    model = registry.create_model(config.model.name, **kw)
    tx = optimizer(config)
    recon_name, recon_fn, frozen = reconstruction_loss(hp, tuple(image_shape))
    recon = (recon_name, recon_fn)
    disc = discriminator(hp, kw["dtype"]) if hp.gan_weight else None
    ema = bool(hp.ema_decay)
    steps = {"train": Step(functools.partial(train_step, model, disc, tx, hp, recon), prefix="")}
    if disc is not None:
        steps[DISC] = Step(functools.partial(discriminator_step, model, disc, tx, hp))
    fields = dict(kw, dtype=kw["dtype"].name)
    return Family(
        init=functools.partial(init_state, model, disc, tx, ema, bool(hp.d_use_kp), frozen),
        steps=steps,
        preview=functools.partial(preview, model, ema),
        preview_columns=4,
        evaluators={"recon": functools.partial(eval_recon, model, ema)},
        default_metrics=METRICS,
        export=functools.partial(export, config.model.name, fields, ema),
        host_evaluators=host_evaluators(model, ema, config),
        train_transforms=functools.partial(train_transforms, hp),
    )


def build_model(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> Any:
    """The config's reenactor (`zoo.reenact.Reenactor`) for frames of `image_shape`, as the family trains it."""
    return registry.create_model(config.model.name, **_model_fields(config, image_shape))


def run_model(setup: Any) -> Any:
    """The reenactor a built run (`train.runs.Setup`) trains, for the tools that read a finished run."""
    return build_model(setup.config, tuple(setup.train_source.info.image_shape))


def _model_fields(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> dict[str, Any]:
    """The reenactor's constructor fields: the model section, its dtype as a dtype, the frames' image_shape."""
    kw = model_kwargs(config.model)
    kw["dtype"] = jnp.dtype(kw.get("dtype", "float32"))
    kw["image_shape"] = tuple(int(d) for d in image_shape)
    return kw


def _validate(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> None:
    """Fail at build, with the fix, on a config the reenactment family cannot train."""
    hp = config.reenact
    motion = config.model.get("motion")
    if motion not in reenact.MOTIONS:
        raise ConfigError(f"model.motion = {motion!r} is not a motion model; choose one of {', '.join(reenact.MOTIONS)} "
                          "(model.name 'fomm' for fomm, 'tpsmm' for tps)")
    for field, scales in (("reenact.scales", hp.scales), ("reenact.d_scales", hp.d_scales)):
        if not scales:
            raise ConfigError(f"{field} is empty; give at least the full scale, e.g. (1.0,)")
        for scale in scales:
            if not 0 < scale <= 1:
                raise ConfigError(f"{field} holds {scale}: scales must be in (0, 1] (1 = full size), e.g. FOMM's "
                                  "(1.0, 0.5, 0.25, 0.125)")
            if scale != 1:
                try:
                    warp.gaussian_taps(scale)
                except ConfigError as error:
                    raise ConfigError(f"{field} holds {scale}: {error}") from None
    if len(image_shape) != 3 or image_shape[-1] != 3:
        raise ConfigError(f"reenactment trains on RGB frames; the data give {tuple(image_shape)}")
    side = min(image_shape[:2])
    if side * min(hp.scales) < 1:
        raise ConfigError(f"reenact.scales {tuple(hp.scales)} go below 1 px on {side} px frames; drop the smallest")
    train_transforms(hp, None, None)  # a bad reenact.jitter is named here, not in the input workers
    if not 0.0 <= hp.ema_decay < 1.0:
        raise ConfigError(f"reenact.ema_decay = {hp.ema_decay} must be in [0, 1); 0 switches the EMA off")
    if hp.dropout_steps and not 0.0 <= hp.dropout_start_p <= hp.dropout_p < 1.0:
        raise ConfigError(f"reenact.dropout_p = {hp.dropout_p} and dropout_start_p = {hp.dropout_start_p} must "
                          "satisfy 0 <= dropout_start_p <= dropout_p < 1 (TPSMM: 0.1 and 0.3)")
    if hp.dropout_steps and motion != "tps":
        raise ConfigError("reenact.dropout_steps is TPSMM's contribution-map dropout; set it 0 for fomm")
    if hp.dropout_steps and hp.dropout_ramp_steps < 1:
        raise ConfigError(f"reenact.dropout_ramp_steps = {hp.dropout_ramp_steps} must be >= 1")
    if any(w < 0 for w in (hp.gan_weight, hp.l1_weight, hp.dssim_weight, hp.equivariance_value,
                           hp.equivariance_jacobian, hp.warp_weight, hp.bg_weight)):
        raise ConfigError("reenact loss weights must be >= 0 (0 switches a term off)")
    if hp.gan_weight and len(hp.feature_matching) > hp.d_num_blocks:
        raise ConfigError(f"reenact.feature_matching has {len(hp.feature_matching)} weights for "
                          f"{hp.d_num_blocks} discriminator blocks; give at most one per block")
    if any(not 0 < m < 1 for m in hp.lr_milestones):
        raise ConfigError(f"reenact.lr_milestones {tuple(hp.lr_milestones)} must be fractions of total_steps in "
                          "(0, 1), e.g. FOMM's (0.6, 0.9); () keeps the learning rate")
    if hp.lr_milestones and config.optim.name != "adam":
        raise ConfigError(f"reenact.lr_milestones decay Adam's learning rate (FOMM's MultiStepLR); optim.name is "
                          f"{config.optim.name!r}: set optim.name = 'adam' or reenact.lr_milestones = ()")
    if hp.lr_milestones and (config.optim.schedule != "constant" or config.optim.warmup_steps):
        raise ConfigError("reenact.lr_milestones is the learning-rate schedule; set optim.schedule = 'constant' and "
                          "optim.warmup_steps = 0, or reenact.lr_milestones = () to use optim's schedule")


# ---------------------------------------------------------------------------------------------------
# Set-up


def optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """FOMM's Adam with MultiStepLR-like decay at `reenact.lr_milestones`, or `optim` as every family has it.

    Adam's `optim.weight_decay` is added to the gradient before Adam (torch.optim.Adam's weight_decay,
    TPSMM's 1e-4), which `train.optim` leaves to adamw.
    """
    o, hp = config.optim, config.reenact
    if o.name != "adam":
        return optim_lib.make(o, config.total_steps)
    if hp.lr_milestones:
        boundaries = {max(1, int(round(m * config.total_steps))): hp.lr_decay for m in hp.lr_milestones}
        lr = optax.piecewise_constant_schedule(o.learning_rate, boundaries)
    else:
        lr = optim_lib.learning_rate(o, config.total_steps)
    parts = []
    if o.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
    if o.weight_decay:
        parts.append(optax.add_decayed_weights(o.weight_decay))
    parts.append(optax.adam(lr, b1=o.b1, b2=o.b2))
    if o.update_keep_prob < 1.0:
        parts.append(optim_lib.keep_updates(o.update_keep_prob))
    return parts[0] if len(parts) == 1 else optax.chain(*parts)


def discriminator(hp: ml_collections.ConfigDict, dtype: Any) -> MultiScaleDiscriminator:
    """FOMM's multi-scale patch discriminator with the config's fields."""
    return MultiScaleDiscriminator(tuple(hp.d_scales), hp.d_block_expansion, hp.d_num_blocks, hp.d_max_features,
                                   hp.d_spectral_norm, dtype=dtype)


def init_state(model: Any, disc: Any, tx: optax.GradientTransformation, ema: bool, use_kp: bool, frozen: dict | None,
               rng: jax.Array, batch: Batch) -> State:
    """Fresh params, optimiser states and collections (batch statistics; the discriminator's spectral state).

    `frozen` (the VGG19 variables of the perceptual loss) is kept as "frozen": read, never trained.
    """
    k_model, k_disc = jax.random.split(rng)
    variables = dict(model.init(_fast_init_key(k_model), *model.example_inputs()))
    params = variables.pop("params")
    state = {"step": jnp.int32(0), "params": {NET: params}, "opt_state": {NET: tx.init(params)},
             "collections": {NET: variables}}
    if disc is not None:
        image = jnp.zeros((1, *model.image_shape), jnp.float32)
        kp = jnp.zeros((1, _num_points(model), 2), jnp.float32) if use_kp else None
        d_vars = dict(disc.init(_fast_init_key(k_disc), image, kp))
        d_params = d_vars.pop("params")
        state["params"][DISC] = d_params
        state["opt_state"][DISC] = tx.init(d_params)
        state["collections"][DISC] = d_vars
    if ema:
        state["ema"] = {NET: params}
    if frozen is not None:
        state["frozen"] = {VGG: frozen}
    return state


def _fast_init_key(key: jax.Array) -> jax.Array:
    """An RBG key drawn from `key` for `init`: XLA:CPU compiles threefry's many per-parameter draws 4-5x slower."""
    return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="rbg")


def _num_points(model: Any) -> int:
    """Keypoints per frame: num_kp (fomm) or num_kp x 5 (tps)."""
    return model.num_kp * (5 if model.motion == "tps" else 1)


# ---------------------------------------------------------------------------------------------------
# Losses


def pyramid(x: jax.Array, scales: tuple[float, ...]) -> list[jax.Array]:
    """x at each scale, anti-aliased down as FOMM's `ImagePyramide` (scale 1 is x itself)."""
    return [x if s == 1 else warp.antialias_downsample(x, s) for s in scales]


def dssim_window(side: int) -> int:
    """The DSSIM window on a map of `side` px: odd, (side // 2) | 1 clipped to [3, 11], never above the side."""
    return min(side, 11, max(3, (side // 2) | 1))


def l1_dssim_pyramid(prediction: jax.Array, target: jax.Array, scales: tuple[float, ...], l1_weight: float,
                     dssim_weight: float) -> jax.Array:
    """Per-example [B] sum over scales of l1_weight mean|p - t| + dssim_weight DSSIM(p, t)."""
    total = jnp.zeros(prediction.shape[0], jnp.float32)
    for p, t in zip(pyramid(prediction, scales), pyramid(target, scales)):
        total = total + l1_weight * jnp.mean(jnp.abs(p - t), axis=(1, 2, 3))
        if dssim_weight:
            total = total + dssim_weight * losses.dssim(p, t, filter_size=dssim_window(min(p.shape[1:3])))
    return total


def reconstruction_loss(hp: ml_collections.ConfigDict, image_shape: tuple[int, int, int] | None = None
                        ) -> tuple[str, Callable[[State, jax.Array, jax.Array], jax.Array], dict | None]:
    """(metric name, fn(state, prediction, driving) -> scalar, the VGG19 variables the state carries or None).

    With `vgg_weights`, FOMM's VGG19 pyramid (`train.perceptual`, checked against the frame size here);
    its variables ride in the state under "frozen" so a compiled step takes them as an input rather than
    as ~80 MB of constants. Otherwise L1 + DSSIM at the same scales.
    """
    scales = tuple(hp.scales)
    if hp.vgg_weights:
        from train import perceptual  # needs torchvision's vgg19 file

        if image_shape is not None:
            perceptual.check_image_size(image_shape[0], image_shape[1], scales)
        pyramid_fn, variables = perceptual.VGGPyramid.load(hp.vgg_weights, scales=scales,
                                                           layer_weights=tuple(hp.perceptual_weights))

        def vgg(state: State, prediction: jax.Array, target: jax.Array) -> jax.Array:
            return pyramid_fn(state["frozen"][VGG], prediction, target)

        return RECON_NAMES[True], vgg, variables

    def l1_dssim(state: State, prediction: jax.Array, target: jax.Array) -> jax.Array:
        return jnp.mean(l1_dssim_pyramid(prediction, target, scales, hp.l1_weight, hp.dssim_weight))

    return RECON_NAMES[False], l1_dssim, None


def random_transform(rng: jax.Array, batch: int, hp: ml_collections.ConfigDict) -> warp.RandomTPS:
    """FOMM's random warp, one per example keyed by its global index (`parallel.example_keys`)."""
    keys = parallel.example_keys(rng, batch)
    one = jax.vmap(lambda k: warp.random_tps(k, 1, hp.sigma_affine, hp.sigma_tps, hp.points_tps))(keys)
    return warp.RandomTPS(one.theta[:, 0], one.control_points[0], one.control_params[:, 0])


def equivariance_loss(kp_driving: dict[str, jax.Array], kp_transformed: dict[str, jax.Array], t: warp.RandomTPS,
                      jacobian: bool) -> dict[str, jax.Array]:
    """FOMM's equivariance terms: kp(D) against T(kp(T D)), and J(D)^-1 J_T J(T D) against I (with `jacobian`).

    `kp_transformed` are the keypoints of the warped frame `random_tps_frame(t, D)`; a detector with
    kp(T D) = T^-1(kp(D)) (and Jacobians transported by T's) scores 0.
    """
    value = jnp.mean(jnp.abs(kp_driving["value"] - warp.random_tps_warp(t, kp_transformed["value"])))
    out = {"equivariance_value": value}
    if jacobian:
        moved = warp.random_tps_jacobian(t, kp_transformed["value"]) @ kp_transformed["jacobian"]
        product = jnp.linalg.inv(kp_driving["jacobian"]) @ moved
        out["equivariance_jacobian"] = jnp.mean(jnp.abs(jnp.eye(2) - product))
    return out


def dropout_probability(hp: ml_collections.ConfigDict, step: jax.Array) -> jax.Array | float:
    """TPSMM's contribution-map dropout p at `step`: min(start + p step / ramp, p) while step < dropout_steps, then 0."""
    if not hp.dropout_steps or not hp.dropout_p:
        return 0.0
    step = jnp.asarray(step, jnp.float32)
    p = jnp.minimum(hp.dropout_start_p + hp.dropout_p * step / hp.dropout_ramp_steps, hp.dropout_p)
    return jnp.where(step < hp.dropout_steps, p, 0.0)


def _training_pass(module: Any, source: jax.Array, driving: jax.Array, transformed: jax.Array,
                   bg_active: jax.Array | None, dropout_p: Any, warp_loss: bool, bg_loss: bool) -> dict[str, Any]:
    """Every forward pass of one training step, in train mode: a `model.apply` method."""
    kp_source = module.keypoints(source, True)
    kp_driving = module.keypoints(driving, True)
    out: dict[str, Any] = {"kp_source": kp_source, "kp_driving": kp_driving}
    if module.motion == "fomm":
        out |= module.animate(source, kp_source, kp_driving, True)
    else:
        bg = None
        if module.background_affine:
            bg = module.background(source, driving, True)
            if bg_active is not None:
                bg = jnp.where(bg_active, bg, jnp.eye(3, dtype=bg.dtype))
            if bg_loss:
                out["bg_reverse"] = module.background(driving, source, True)
        out |= module.animate(source, kp_source, kp_driving, True, bg, dropout_p)
        out["bg_param"] = bg
        if warp_loss:
            out["encoded_driving"] = module.encode_driving(driving, out["occlusion"], True)
    out["kp_transformed"] = module.keypoints(transformed, True)
    return out


def apply_train(model: Any, params: Any, cols: dict, *args: Any, **kw: Any) -> tuple[Any, dict]:
    """`model.apply` in training: the output and the updated collections (batch statistics), if it has any."""
    variables = {"params": params, **cols}
    if not cols:
        return model.apply(variables, *args, **kw), {}
    out, new = model.apply(variables, *args, mutable=list(cols), **kw)
    return out, dict(new)


def to_unit(images: jax.Array) -> jax.Array:
    """uint8 pixels -> float32 in [0, 1], what the models take."""
    return images.astype(jnp.float32) / 255.0


def reenactor_loss(model: Any, disc: Any, hp: ml_collections.ConfigDict, recon: tuple[str, Callable], state: State,
                   batch: Batch, rng: jax.Array, params: Any) -> tuple[jax.Array, tuple[dict, dict]]:
    """The weighted sum of every term, and (updated batch statistics, metrics named loss/<term>)."""
    source, driving = to_unit(batch["source_image"]), to_unit(batch["driving_image"])
    step = state["step"]
    t = random_transform(jax.random.fold_in(rng, 0), source.shape[0], hp)
    transformed = warp.random_tps_frame(t, driving)
    tps = model.motion == "tps"
    bg_on = tps and model.background_affine
    bg_active = (step >= hp.bg_start_step) if bg_on and hp.bg_start_step > 0 else None
    dropout_p = dropout_probability(hp, step) if tps else 0.0
    rngs = {"dropout": jax.random.fold_in(rng, 1)} if not isinstance(dropout_p, float) else {}
    cols = state["collections"][NET]
    out, new_cols = apply_train(model, params, cols, source, driving, transformed, bg_active, dropout_p,
                                tps and bool(hp.warp_weight), bg_on and bool(hp.bg_weight), method=_training_pass,
                                rngs=rngs)
    if bg_active is not None:
        new_cols = _keep_background_stats(new_cols, cols, bg_active)
    prediction = out["prediction"]
    name, recon_fn = recon
    terms = {name: recon_fn(state, prediction, driving)}
    eq = equivariance_loss(out["kp_driving"], out["kp_transformed"], t, "jacobian" in out["kp_driving"])
    terms["equivariance_value"] = hp.equivariance_value * eq["equivariance_value"]
    if "equivariance_jacobian" in eq and hp.equivariance_jacobian:
        terms["equivariance_jacobian"] = hp.equivariance_jacobian * eq["equivariance_jacobian"]
    if "encoded_driving" in out:
        maps = out["warped_encoder_maps"]
        terms["warp"] = hp.warp_weight * sum(jnp.mean(jnp.abs(e.astype(jnp.float32) - maps[-i - 1].astype(jnp.float32)))
                                             for i, e in enumerate(out["encoded_driving"]))
    if "bg_reverse" in out:
        value = jnp.mean(jnp.abs(jnp.eye(3) - out["bg_param"] @ out["bg_reverse"]))
        terms["bg"] = hp.bg_weight * value * (1.0 if bg_active is None else bg_active.astype(jnp.float32))
    if disc is not None:
        terms |= gan_generator_terms(disc, hp, state["params"][DISC], state["collections"][DISC], prediction, driving,
                                     out["kp_driving"]["value"])
    loss = sum(terms.values())
    metrics = {f"loss/{k}": v for k, v in terms.items()} | {"loss": loss,
                                                             "recon_l1": jnp.mean(jnp.abs(prediction - driving))}
    return loss, (new_cols, metrics)


def _keep_background_stats(new: dict, old: dict, active: jax.Array) -> dict:
    """The background predictor's batch statistics left as they were while it is off (TPSMM does not run it then)."""
    stats = new.get(BATCH_STATS, {})
    if "bg_predictor" not in stats:
        return new
    kept = jax.tree.map(lambda a, b: jnp.where(active, a, b), stats["bg_predictor"], old[BATCH_STATS]["bg_predictor"])
    return dict(new, **{BATCH_STATS: dict(stats, bg_predictor=kept)})


def _discriminate(disc: Any, d_params: Any, d_cols: Any, image: jax.Array, kp: jax.Array | None, train: bool
                  ) -> tuple[list, Any]:
    """Per scale (block outputs, prediction map), and the spectral state (updated with `train`)."""
    variables = {"params": d_params, **d_cols}
    if train and d_cols:
        out, new = disc.apply(variables, image, kp, True, mutable=list(d_cols))
        return out, dict(new)
    return disc.apply(variables, image, kp, False), d_cols


def gan_generator_terms(disc: Any, hp: ml_collections.ConfigDict, d_params: Any, d_cols: Any, prediction: jax.Array,
                        driving: jax.Array, kp_driving: jax.Array) -> dict[str, jax.Array]:
    """FOMM's generator side: gan_weight mean (1 - D(fake))^2 per scale, feature matching L1 per block."""
    kp = jax.lax.stop_gradient(kp_driving) if hp.d_use_kp else None
    fake, _ = _discriminate(disc, d_params, d_cols, prediction, kp, False)
    real, _ = _discriminate(disc, d_params, d_cols, driving, kp, False)
    gan = sum(jnp.mean((1.0 - f[1]) ** 2) for f in fake)
    terms = {"gan": hp.gan_weight * gan}
    weights = tuple(hp.feature_matching)
    if any(weights):
        fm = 0.0
        for (f_maps, _), (r_maps, _) in zip(fake, real):
            for w, a, b in zip(weights, f_maps, r_maps):
                if w:
                    fm = fm + w * jnp.mean(jnp.abs(a.astype(jnp.float32) - jax.lax.stop_gradient(b).astype(jnp.float32)))
        terms["feature_matching"] = fm
    return terms


def train_step(model: Any, disc: Any, tx: optax.GradientTransformation, hp: ml_collections.ConfigDict,
               recon: tuple[str, Callable], state: State, batch: Batch, rng: jax.Array) -> tuple[State, dict]:
    """One update of the reenactor on every loss term; batch statistics and the EMA follow."""
    loss_fn = functools.partial(reenactor_loss, model, disc, hp, recon, state, batch, rng)
    new, grads, (cols, metrics) = optim_lib.descend(state, NET, tx, loss_fn)
    new["collections"] = dict(state["collections"], **{NET: cols})
    metrics["grad_norm"] = optax.global_norm(grads)
    if hp.ema_decay:
        new["ema"] = {NET: optax.incremental_update(new["params"][NET], state["ema"][NET], 1.0 - hp.ema_decay)}
    return new, metrics


def discriminator_loss(disc: Any, hp: ml_collections.ConfigDict, d_cols: Any, real: jax.Array, fake: jax.Array,
                       kp: jax.Array | None, params: Any) -> tuple[jax.Array, tuple[Any, dict]]:
    """LSGAN: gan_weight sum over scales of mean (1 - D(real))^2 + D(fake)^2; spectral state from the fake's pass."""
    real_out, cols = _discriminate(disc, params, d_cols, real, kp, True)
    fake_out, cols = _discriminate(disc, params, cols, fake, kp, True)
    value = sum(jnp.mean((1.0 - r[1]) ** 2) + jnp.mean(f[1] ** 2) for r, f in zip(real_out, fake_out))
    loss = hp.gan_weight * value
    metrics = {"loss": loss, "real_score": sum(jnp.mean(r[1]) for r in real_out) / len(real_out),
               "fake_score": sum(jnp.mean(f[1]) for f in fake_out) / len(fake_out)}
    return loss, (cols, metrics)


def discriminator_step(model: Any, disc: Any, tx: optax.GradientTransformation, hp: ml_collections.ConfigDict,
                       state: State, batch: Batch, rng: jax.Array) -> tuple[State, dict]:
    """The discriminator on driving frames (real) and the updated reenactor's predictions (fake)."""
    del rng
    source, driving = to_unit(batch["source_image"]), to_unit(batch["driving_image"])
    out, _ = apply_train(model, state["params"][NET], state["collections"][NET], source, driving, True)
    fake = jax.lax.stop_gradient(out["prediction"])
    kp = jax.lax.stop_gradient(out["kp_driving"]["value"]) if hp.d_use_kp else None
    loss_fn = functools.partial(discriminator_loss, disc, hp, state["collections"][DISC], driving, fake, kp)
    new, _, (cols, metrics) = optim_lib.descend(state, DISC, tx, loss_fn)
    new["collections"] = dict(state["collections"], **{DISC: cols})
    return new, metrics


def train_transforms(hp: ml_collections.ConfigDict, source: Any, source_b: Any) -> tuple[Any, None]:
    """FOMM's mirror and colour jitter of each training pair, run in the input workers; None when both are off."""
    del source, source_b
    if not hp.hflip and not any(hp.jitter):
        return None, None
    return pair_augment.PairAugment(horizontal_flip=bool(hp.hflip), jitter=tuple(hp.jitter)), None


# ---------------------------------------------------------------------------------------------------
# Evaluation, previews, export


def eval_variables(ema: bool, state: State) -> dict[str, Any]:
    """The reenactor's inference variables: params (the EMA when on) and batch statistics."""
    params = (state["ema"] if ema else state["params"])[NET]
    return {"params": params, **state.get("collections", {}).get(NET, {})}


def reconstruct(model: Any, ema: bool, state: State, source: jax.Array, driving: jax.Array) -> dict[str, Any]:
    """The driving frames rebuilt from the sources (inference mode, absolute keypoints): the model's outputs."""
    return model.apply(eval_variables(ema, state), source, driving, False)


def eval_recon(model: Any, ema: bool, state: State, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
    """Per-example L1 (pixels in [0, 1]) and PSNR of the reconstruction, and of the source copied (the baseline)."""
    del rng
    source, driving = to_unit(batch["source_image"]), to_unit(batch["driving_image"])
    prediction = reconstruct(model, ema, state, source, driving)["prediction"]
    return {"recon_l1": jnp.mean(jnp.abs(prediction - driving), axis=(1, 2, 3)),
            "recon_psnr": losses.psnr(prediction, driving),
            "copy_l1": jnp.mean(jnp.abs(source - driving), axis=(1, 2, 3)),
            "copy_psnr": losses.psnr(source, driving)}


def keypoint_colours(n: int) -> np.ndarray:
    """n distinct colours [n, 3] in [0, 1], hues evenly spaced."""
    return np.asarray([colorsys.hsv_to_rgb(i / max(n, 1), 1.0, 1.0) for i in range(n)], np.float32)


def draw_keypoints(images: jax.Array, kp: jax.Array) -> jax.Array:
    """images [B, H, W, 3] with each keypoint kp [B, N, 2] a coloured dot of about 1.5 px radius."""
    h, w = images.shape[1:3]
    variance = (1.5 * 2.0 / max(h - 1, 1)) ** 2
    dots = warp.kp2gaussian(kp, (h, w), variance)
    colours = jnp.asarray(keypoint_colours(kp.shape[1]))
    weight = jnp.sum(dots, axis=-1, keepdims=True)
    colour = jnp.einsum("bhwn,nc->bhwc", dots, colours) / jnp.maximum(weight, 1e-6)
    alpha = jnp.clip(weight, 0.0, 1.0)
    return images * (1.0 - alpha) + colour * alpha


def preview(model: Any, ema: bool, state: State, batch: Batch, rng: jax.Array) -> jax.Array:
    """One row per pair: source (its keypoints drawn) | driving (its keypoints) | prediction | deformed source."""
    del rng
    source, driving = to_unit(batch["source_image"][:8]), to_unit(batch["driving_image"][:8])
    out = reconstruct(model, ema, state, source, driving)
    columns = [draw_keypoints(source, out["kp_source"]["value"]), draw_keypoints(driving, out["kp_driving"]["value"]),
               out["prediction"], out["deformed"].astype(jnp.float32)]
    return jnp.clip(jnp.stack(columns, axis=1).reshape((-1,) + source.shape[1:]), 0.0, 1.0)


def export(name: str, fields: dict[str, Any], ema: bool, state: State) -> Export:
    """The reenactor's evaluation params and batch statistics with its registry name and fields, for `zoo.pretrained`."""
    variables = eval_variables(ema, state)
    params = variables.pop("params")
    return Export(name, fields, params, variables)


def host_evaluators(model: Any, ema: bool, config: ml_collections.ConfigDict
                    ) -> dict[str, Callable[[State, Any, int], dict[str, float]]]:
    """`reenact` (pose-evaluation reconstruction, cross-identity) and `reenact_truth` (synthetic ground truth).

    `train.metrics.reenact`'s protocols on whole held-out clips, through `animate_callable` (which needs
    `zoo.animate`); the number of clips comes from eval.num_examples, counted in clips.
    """
    del config
    make_animate = functools.partial(animate_callable, model, ema)
    return {kind: reenact_metrics.host_evaluator(kind, make_animate) for kind in reenact_metrics.KINDS}


def animate_callable(model: Any, ema: bool, state: State, batch_size: int = 16
                     ) -> Callable[[np.ndarray, np.ndarray, str], np.ndarray]:
    """`animate(source, driving, mode)`: the state's reenactor through `zoo.animate.animate_clip`."""
    from zoo import animate as animate_lib  # imported when a host metric runs, not with the family

    variables = jax.device_get(eval_variables(ema, state))

    def animate(source: np.ndarray, driving: np.ndarray, mode: str = "relative") -> np.ndarray:
        return animate_lib.animate_clip(model, variables, source, driving, mode=mode, batch_size=batch_size)

    return animate
