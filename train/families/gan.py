"""GAN family: the discriminator and the generator as separate named steps, with the losses papers compare.

Steps, in order within one trainer step: "D" (every step), "D_r1" (lazy R1 every `r1_every` steps,
StyleGAN2's scheme, when `r1_gamma > 0`), "G" (every `n_critic` steps), "G_pl" (StyleGAN2's lazy
path-length regularisation every `pl_every` G steps, when `pl_weight > 0`) and "ada" (StyleGAN2-ADA's
controller of the augmentation probability p every `ada_every` steps, when `ada_target > 0`), so
`total_steps` counts discriminator updates and the generator makes total_steps / n_critic of them.
A style-based generator (`stylegan2_g`) also gets per-example keys for its noise and style mixing
(`style_mixing`); `lazy_adam` rescales Adam for the lazy intervals; `mirror` x-flips half the reals.

Losses (D logits r on real and f on fake images):
- "non_saturating" (Goodfellow et al. 2014): L_D = softplus(-r) + softplus(f), L_G = softplus(-f);
- "hinge" (Lim & Ye 2017; SNGAN, BigGAN): L_D = relu(1 - r) + relu(1 + f), L_G = -f;
- "wgan_gp" (Gulrajani et al. 2017): L_D = f - r + gp_weight * (|grad D(x_hat)| - 1)^2 on random
  interpolates x_hat of real and fake, L_G = -f.
R1 (Mescheder et al. 2018) adds r1_gamma / 2 * |grad D(x_real)|^2. DiffAugment (Zhao et al. 2020)
or ADA (`train/ada.py`, Karras et al. 2020) augments every image the discriminator sees, real and
fake, in every step. The generator's EMA (Karras et al.) uses StyleGAN's half-life in images:
beta = 0.5^(batch / half-life), optionally ramped up; evaluation, previews and exports use it.

Every random draw (latents, fake labels, augmentations, interpolation weights) is keyed by the
example's global index, and batch norm syncs over the data axis under pmap, so one device, jit on
eight and pmap on eight reach the same parameters.

Evaluation: the host evaluator "fid" draws `eval_samples` images, quantises them to uint8, and
reports FID, KID, precision/recall and (with a classifier extractor) IS against the evaluation split
through `gan.extractor`, with the protocol line naming all of it; "truncation" repeats it at each
`truncation_psi` and "ppl" gives the perceptual path length in W over the extractor's features. The compiled evaluator "disc"
reports the discriminator's mean logits on held-out real images and on fresh fakes, and how often
it scores the real image of a pair above the fake (0.5 is a discriminator that cannot tell).
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from train import ada, diffaugment, evaluators, parallel, sections
from train import optim as optim_lib
from train.config import ConfigError, model_kwargs
from train.families.base import Batch, Export, Family, State, Step
from train.metrics import extractors, features, generative
from zoo import registry

LOSSES = ("non_saturating", "hinge", "wgan_gp")
METRICS = ("fid",)
_Z, _LABEL, _AUG_REAL, _AUG_FAKE, _MIX, _STYLE, _PL, _MIRROR = range(8)  # fold_in tags: one stream per kind of draw


def section() -> ml_collections.ConfigDict:
    """The `config.gan` defaults (DCGAN with the non-saturating loss), defined in `train.sections`."""
    return sections.gan()


def discriminator_loss(kind: str, real: jax.Array, fake: jax.Array) -> jax.Array:
    """Per-example discriminator loss from the logits on real and fake images (without penalties)."""
    if kind == "non_saturating":
        return jax.nn.softplus(-real) + jax.nn.softplus(fake)
    if kind == "hinge":
        return jax.nn.relu(1.0 - real) + jax.nn.relu(1.0 + fake)
    return fake - real


def generator_loss(kind: str, fake: jax.Array) -> jax.Array:
    """Per-example generator loss from the discriminator's logits on its samples."""
    return jax.nn.softplus(-fake) if kind == "non_saturating" else -fake


def input_gradients(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """d(sum of logits)/dx: each example's gradient when the critic treats examples independently."""
    return jax.grad(lambda v: jnp.sum(logits_fn(v)))(x)


def gradient_penalty(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """WGAN-GP's mean (|grad_x D(x)|_2 - 1)^2 over the batch."""
    g = input_gradients(logits_fn, x).astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim))) + 1e-12)
    return jnp.mean(jnp.square(norm - 1.0))


def r1_penalty(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """R1's mean |grad_x D(x)|^2 over a batch of real images."""
    g = input_gradients(logits_fn, x).astype(jnp.float32)
    return jnp.mean(jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim))))


def ema_beta(batch_size: int, half_life_images: Any) -> Any:
    """Per-update EMA decay whose weight halves every `half_life_images` images (StyleGAN's ema_kimg)."""
    return 0.5 ** (batch_size / half_life_images)


def to_unit(pixels: jax.Array) -> jax.Array:
    """uint8 pixels -> floats in [-1, 1], the generators' output range."""
    return pixels.astype(jnp.float32) / 127.5 - 1.0


def reference_name(config: ml_collections.ConfigDict) -> str:
    """The evaluation split as the reference-feature cache and protocol lines name it: spec, split, size."""
    spec = config.data.eval_source or config.data.source
    return f"{spec}:{config.data.eval_split}@{config.data.resolution or 'native'}"


def measurement(config: ml_collections.ConfigDict, source: Any, num_examples: int
                ) -> tuple[features.Extractor, generative.Protocol, dict[str, np.ndarray]]:
    """The config's extractor, protocol and (cached) reference outputs on the first `num_examples` of `source`."""
    hp = config.gan
    extractor = extractors.get_extractor(hp.extractor, weights=hp.extractor_weights or None)
    protocol = generative.Protocol(num_samples=hp.eval_samples, kid_subset_size=hp.kid_subset_size,
                                   kid_subsets=hp.kid_subsets, pr_k=hp.pr_k, seed=config.seed)
    cache = pathlib.Path(hp.cache_dir) if hp.cache_dir else features.cache_dir() / "reference"
    return extractor, protocol, generative.reference_outputs(extractor, source, reference_name(config), num_examples,
                                                             cache)


def _validate(config: ml_collections.ConfigDict) -> None:
    hp = config.gan
    if hp.loss not in LOSSES:
        raise ConfigError(f"gan.loss = {hp.loss!r}; choose one of {', '.join(LOSSES)}")
    for field in ("n_critic", "r1_every", "pl_every", "pl_batch_shrink", "ada_every", "eval_samples", "ppl_samples",
                  "sample_batch_size", "kid_subsets", "pr_k"):
        if hp[field] < 1:
            raise ConfigError(f"gan.{field} = {hp[field]} must be >= 1")
    for field in ("gp_weight", "r1_gamma", "ema_half_life_images", "ema_rampup", "d_learning_rate", "pl_weight",
                  "pl_decay", "ada_target", "ada_p", "ada_kimg"):
        if hp[field] < 0:
            raise ConfigError(f"gan.{field} = {hp[field]} must be >= 0 (0 switches it off)")
    if hp.ppl_sampling not in ("end", "full"):
        raise ConfigError(f"gan.ppl_sampling = {hp.ppl_sampling!r}; use 'end' (t = 0, NVIDIA's ppl_wend) or 'full'")
    if not hp.truncation_psi or any(not 0.0 <= p <= 1.0 for p in hp.truncation_psi):
        raise ConfigError(f"gan.truncation_psi = {tuple(hp.truncation_psi)}: give psi values in [0, 1], e.g. "
                          "(0.5, 0.7, 1.0)")
    if not 0.0 <= hp.style_mixing <= 1.0:
        raise ConfigError(f"gan.style_mixing = {hp.style_mixing} is a probability: use 0 .. 1 (StyleGAN2: 0.9)")
    group = hp.discriminator.get("mbstd_group", 0)
    for field, batch in (("batch_size", config.batch_size), ("eval.batch_size", config.eval.batch_size)):
        if group and batch % min(group, batch):  # D's minibatch stddev groups consecutive examples
            raise ConfigError(f"{field} = {batch} is not a multiple of gan.discriminator.mbstd_group = {group}; "
                              f"D's minibatch stddev would fail on it (at the first evaluation, after training): "
                              f"use a multiple of {group}")
    if hp.pl_weight and config.batch_size % hp.pl_batch_shrink:
        raise ConfigError(f"gan.pl_batch_shrink = {hp.pl_batch_shrink} must divide batch_size = {config.batch_size}")
    if (hp.ada_target or hp.ada_p) and hp.diffaugment:
        raise ConfigError("gan.ada_target/ada_p and gan.diffaugment both augment what D sees; switch one off "
                          "(ada_target = ada_p = 0, or diffaugment = '')")
    if hp.ada_target and not hp.ada_kimg:
        raise ConfigError("gan.ada_kimg = 0: ADA needs the thousands of images over which p may go from 0 to 1 "
                          "(StyleGAN2-ADA: 500)")
    if hp.lazy_adam and config.optim.name not in ("adam", "adamw", "adabelief"):
        raise ConfigError(f"gan.lazy_adam rescales Adam's betas, but optim.name = {config.optim.name!r}; "
                          "use adam or set gan.lazy_adam = False")
    try:
        ada.pipe_from_spec(hp.ada_pipe)
    except ValueError as e:
        raise ConfigError(f"gan.ada_pipe: {e}") from e
    d = hp.discriminator
    if hp.loss == "wgan_gp" and d.get("norm") == "batch":
        raise ConfigError(
            "gan.loss = 'wgan_gp' needs a critic without batch norm (it makes each output depend on the batch, "
            "which breaks the per-example gradient penalty): set gan.discriminator.norm = 'none' or 'layer'"
        )
    g_classes, d_classes = config.model.get("num_classes", 0), d.get("num_classes", 0)
    if g_classes != d_classes:
        raise ConfigError(f"model.num_classes = {g_classes} but gan.discriminator.num_classes = {d_classes}; "
                          "a conditional GAN needs both set to the number of classes")
    try:
        diffaugment.parse_policy(hp.diffaugment)
    except ValueError as e:
        raise ConfigError(f"gan.diffaugment: {e}") from e


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The config's training hyper-parameters, resolved once, that the compiled steps close over."""

    loss: str
    gp_weight: float
    policy: tuple[str, ...]  # DiffAugment ops
    mirror: bool  # x-flip half the real images (NVIDIA's --mirror: the data set doubled by its mirror images)
    ada_pipe: Any  # ADA's pipeline when ADA is on, else None
    ada_p: float  # its initial (or, without a target, fixed) probability
    mixing_prob: float
    r1_weight: float  # gamma / 2 times the lazy interval
    pl_weight: float  # pl_weight times the lazy interval
    pl_decay: float
    pl_batch_shrink: int
    ema_half_life: float  # images; 0 = no EMA
    ema_rampup: float
    batch_size: int


def recipe(config: ml_collections.ConfigDict) -> Recipe:
    """The `Recipe` of a validated config."""
    hp = config.gan
    return Recipe(loss=hp.loss, gp_weight=hp.gp_weight, policy=diffaugment.parse_policy(hp.diffaugment),
                  mirror=hp.mirror,
                  ada_pipe=ada.pipe_from_spec(hp.ada_pipe) if hp.ada_target or hp.ada_p else None, ada_p=hp.ada_p,
                  mixing_prob=hp.style_mixing,
                  r1_weight=0.5 * hp.r1_gamma * hp.r1_every, pl_weight=hp.pl_weight * hp.pl_every,
                  pl_decay=hp.pl_decay, pl_batch_shrink=hp.pl_batch_shrink, ema_half_life=hp.ema_half_life_images,
                  ema_rampup=hp.ema_rampup, batch_size=config.batch_size)


def make(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> Family:
    """The GAN family for `config` on images of `image_shape` (H, W, C)."""
    _validate(config)
    hp = config.gan
    image_shape = tuple(image_shape)
    g_kw, d_kw = model_kwargs(config.model), model_kwargs(hp.discriminator)
    for kw in (g_kw, d_kw):
        kw["dtype"] = jnp.dtype(kw.get("dtype", "float32"))
    nets = {"G": registry.create_model(config.model.name, image_shape=image_shape, **g_kw),
            "D": registry.create_model(hp.discriminator.name, image_shape=image_shape, **d_kw)}
    if hp.style_mixing or hp.pl_weight:
        _check_style_generator(config, nets["G"])
    r = recipe(config)
    tx = optimizers(config)
    ema = bool(r.ema_half_life)
    sample_fn = functools.partial(sample, nets["G"], ema)
    steps = {"D": Step(functools.partial(d_step, nets, tx["D"], r))}
    if hp.r1_gamma:
        steps["D_r1"] = Step(functools.partial(r1_step, nets, tx["D"], r), every=hp.r1_every)
    steps["G"] = Step(functools.partial(g_step, nets, tx["G"], r), every=hp.n_critic)
    if hp.pl_weight:
        steps["G_pl"] = Step(functools.partial(pl_step, nets, tx["G"], r), every=hp.pl_every * hp.n_critic)
    if hp.ada_target:
        steps["ada"] = Step(functools.partial(ada_step, hp.ada_target, config.batch_size * hp.ada_every,
                                              hp.ada_kimg), every=hp.ada_every)
    fields = dict(g_kw, dtype=jnp.dtype(g_kw["dtype"]).name, image_shape=list(image_shape))
    return Family(
        init=functools.partial(init_state, nets, tx, r, config.data.eval_source or config.data.source),
        steps=steps,
        preview=functools.partial(preview, sample_fn),
        preview_columns=8,
        evaluators={"disc": functools.partial(eval_disc, nets, sample_fn)},
        default_metrics=METRICS,
        export=functools.partial(export, config.model.name, fields, ema),
        host_evaluators={"fid": functools.partial(eval_fid, config, sample_fn),
                         "truncation": functools.partial(eval_truncation, config, nets["G"], ema),
                         "ppl": functools.partial(eval_ppl, config, nets["G"], ema)},
        generate=functools.partial(generate, sample_fn),
    )


def _check_style_generator(config: ml_collections.ConfigDict, gen: Any) -> None:
    """Style mixing and path-length regularisation need a generator with a mapping network (StyleGAN2)."""
    if not getattr(gen, "per_example_keys", False):
        raise ConfigError(f"gan.style_mixing and gan.pl_weight need a style-based generator such as stylegan2_g; "
                          f"model.name = {config.model.name!r} has no mapping network: set both to 0")


def optimizers(config: ml_collections.ConfigDict) -> dict[str, optax.GradientTransformation]:
    """G's and D's optimisers: D may have its own learning rate, and G's schedule counts only G's updates.

    With `gan.lazy_adam`, a net regularised every c steps gets Adam's lr times c/(c+1) and betas to
    the power c/(c+1) (StyleGAN2, Appendix B), so the extra lazy updates keep the same effective step.
    """
    hp = config.gan
    g_updates = -(-config.total_steps // hp.n_critic)
    optim_g = ml_collections.ConfigDict(config.optim.to_dict())
    optim_d = ml_collections.ConfigDict(config.optim.to_dict())
    optim_d.learning_rate = hp.d_learning_rate or config.optim.learning_rate
    if hp.lazy_adam:
        for optim, every, on in ((optim_d, hp.r1_every, hp.r1_gamma), (optim_g, hp.pl_every, hp.pl_weight)):
            if on:
                ratio = every / (every + 1)
                optim.learning_rate *= ratio
                optim.b1, optim.b2 = optim.b1**ratio, optim.b2**ratio
    return {"G": optim_lib.make(optim_g, g_updates), "D": optim_lib.make(optim_d, config.total_steps)}


def init_state(nets: dict[str, Any], tx: dict[str, optax.GradientTransformation], r: Recipe, data_spec: str,
               rng: jax.Array, batch: Batch) -> State:
    """Fresh params, collections (BN stats, spectral u, w_avg) and optimiser states of G and D, plus the
    G's EMA, the path-length mean and ADA's p and statistics when those are on."""
    num_classes = nets["G"].num_classes
    if num_classes and "label" not in batch:
        raise ConfigError(f"model.num_classes = {num_classes} but the data {data_spec!r} have no labels; "
                          "use a labelled source or set num_classes = 0 in model and gan.discriminator")
    keys = dict(zip(nets, jax.random.split(rng, len(nets))))
    variables = {name: net.init(keys[name], *net.example_inputs()) for name, net in nets.items()}
    params = {name: v["params"] for name, v in variables.items()}
    collections = {name: {c: v[c] for c in v if c != "params"} for name, v in variables.items()}
    state = {"step": jnp.int32(0), "params": params,
             "opt_state": {name: tx[name].init(p) for name, p in params.items()}}
    if any(collections.values()):
        state["collections"] = {name: c for name, c in collections.items() if c}
    if r.ema_half_life:
        state["ema"] = {"G": params["G"]}
    if r.pl_weight:
        state["pl_mean"] = jnp.float32(0.0)
    if r.ada_pipe is not None:
        state["ada"] = ada_state(r.ada_p)
    return state


def ada_state(p: float = 0.0) -> dict[str, jax.Array]:
    """ADA's augmentation probability and the sign statistic summed since its last adjustment."""
    return {"p": jnp.float32(p), "sign_sum": jnp.float32(0.0), "steps": jnp.float32(0.0)}


def cols(state: State, net: str) -> dict:
    """A network's non-param collections in the state (empty when it has none)."""
    return state.get("collections", {}).get(net, {})


def with_cols(state: State, net: str, new_cols: dict) -> State:
    """The state with a network's collections replaced by `new_cols` (unchanged when it has none)."""
    if not new_cols:
        return state
    return dict(state, collections=dict(state["collections"], **{net: new_cols}))


def run(net: Any, params: Any, net_cols: dict, x: jax.Array, labels: jax.Array | None,
        train: bool, **kwargs: Any) -> tuple[jax.Array, dict]:
    """Apply a network; in training its updated collections (BN stats, spectral u, w_avg) come back too."""
    variables = {"params": params, **net_cols}
    if train and net_cols:
        return net.apply(variables, x, labels, train=True, mutable=list(net_cols), **kwargs)
    return net.apply(variables, x, labels, train=train, **kwargs), net_cols


def style_kwargs(gen: Any, keys: jax.Array, mixing_prob: float) -> dict[str, Any]:
    """Per-example keys for a generator that draws its own noise and style mixing (StyleGAN2); {} for the others."""
    if not getattr(gen, "per_example_keys", False):
        return {}
    return {"keys": jax.vmap(lambda k: jax.random.fold_in(k, _STYLE))(keys), "mixing_prob": mixing_prob}


def draws(keys: jax.Array, tag: int, fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """One draw of `fn` per example key, from the stream `tag`, so each kind of draw is independent."""
    return jax.vmap(lambda k: fn(jax.random.fold_in(k, tag)))(keys)


def latents(gen: Any, keys: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """Per-example latents and (for a conditional G) class labels."""
    z = draws(keys, _Z, lambda k: jax.random.normal(k, (gen.latent_dim,)))
    num_classes = gen.num_classes
    labels = draws(keys, _LABEL, lambda k: jax.random.randint(k, (), 0, num_classes)) if num_classes else None
    return z, labels


def augment(r: Recipe, state: State, keys: jax.Array, tag: int, x: jax.Array) -> jax.Array:
    """What D sees of `x`: ADA's pipeline at the state's p, DiffAugment's policy, or x itself; one key per image."""
    if r.ada_pipe is not None:
        return ada.augment(x, jax.vmap(lambda k: jax.random.fold_in(k, tag))(keys), state["ada"]["p"], r.ada_pipe)
    if not r.policy:
        return x
    return jax.vmap(lambda k, v: diffaugment.diff_augment(v[None], jax.random.fold_in(k, tag), r.policy)[0])(keys, x)


def real_inputs(r: Recipe, state: State, num_classes: int, batch: Batch,
                keys: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """The batch's real images in [-1, 1] (half of them mirrored with `gan.mirror`), augmented as D sees them, and
    their labels for a conditional GAN."""
    x = to_unit(batch["image"])
    if r.mirror:
        flip = draws(keys, _MIRROR, jax.random.bernoulli)
        x = jnp.where(flip[:, None, None, None], jnp.flip(x, axis=2), x)
    return augment(r, state, keys, _AUG_REAL, x), batch["label"] if num_classes else None


def d_loss(d: Any, d_cols: dict, loss_kind: str, gp_weight: float, real: jax.Array, real_labels: jax.Array | None,
           fake: jax.Array, fake_labels: jax.Array | None, keys: jax.Array, params: Any) -> tuple[jax.Array, tuple]:
    """D's mean loss on real and fake images (plus WGAN-GP's penalty), its metrics and updated collections."""
    r, new_cols = run(d, params, d_cols, real, real_labels, True)
    f, new_cols = run(d, params, new_cols, fake, fake_labels, True)
    loss = jnp.mean(discriminator_loss(loss_kind, r, f))
    metrics = {"loss": loss, "real_logit": jnp.mean(r), "fake_logit": jnp.mean(f),
               "real_sign": jnp.mean(jnp.sign(r))}
    if loss_kind == "wgan_gp":
        eps = draws(keys, _MIX, lambda k: jax.random.uniform(k, (1, 1, 1)))
        mix = eps * real + (1.0 - eps) * fake
        gp = gradient_penalty(lambda x: run(d, params, new_cols, x, real_labels, True)[0], mix)
        metrics["gradient_penalty"] = gp
        loss = loss + gp_weight * gp
    return loss, (metrics | {"total_loss": loss}, new_cols)


def d_step(nets: dict[str, Any], tx: optax.GradientTransformation, r: Recipe,
           state: State, batch: Batch, rng: jax.Array) -> tuple[State, dict]:
    """One D update: real images against fresh fakes, both through the same augmentation."""
    keys = parallel.example_keys(rng, batch["image"].shape[0])
    real, real_labels = real_inputs(r, state, nets["G"].num_classes, batch, keys)
    z, fake_labels = latents(nets["G"], keys)
    fake = run(nets["G"], state["params"]["G"], cols(state, "G"), z, fake_labels, True,
               **style_kwargs(nets["G"], keys, r.mixing_prob))[0]
    fake = augment(r, state, keys, _AUG_FAKE, jax.lax.stop_gradient(fake))
    loss_fn = functools.partial(d_loss, nets["D"], cols(state, "D"), r.loss, r.gp_weight, real, real_labels, fake,
                                fake_labels, keys)
    new, grads, (metrics, new_cols) = optim_lib.descend(state, "D", tx, loss_fn)
    metrics["grad_norm"] = optax.global_norm(grads)
    if r.ada_pipe is not None:  # E[sign(D(real))], ADA's overfitting heuristic r_t, accumulated until adjusted
        new["ada"] = dict(new["ada"], sign_sum=new["ada"]["sign_sum"] + metrics["real_sign"],
                          steps=new["ada"]["steps"] + 1.0)
    return with_cols(new, "D", new_cols), metrics


def r1_step(nets: dict[str, Any], tx: optax.GradientTransformation, r: Recipe,
            state: State, batch: Batch, rng: jax.Array) -> tuple[State, dict]:
    """A lazy R1 update of D: gamma / 2 times the interval times R1 on the (augmented) real batch."""
    keys = parallel.example_keys(rng, batch["image"].shape[0])
    real, labels = real_inputs(r, state, nets["G"].num_classes, batch, keys)
    d = nets["D"]

    def loss_fn(params):
        penalty = r1_penalty(lambda x: run(d, params, cols(state, "D"), x, labels, True)[0], real)
        return r.r1_weight * penalty, {"r1_penalty": penalty}

    new, _, metrics = optim_lib.descend(state, "D", tx, loss_fn)
    return new, metrics


def g_loss(nets: dict[str, Any], state: State, r: Recipe, keys: jax.Array, z: jax.Array,
           labels: jax.Array | None, params: Any) -> tuple[jax.Array, tuple]:
    """G's mean loss on D's verdict of its augmented samples, its metrics and G's updated collections."""
    fake, new_cols = run(nets["G"], params, cols(state, "G"), z, labels, True,
                         **style_kwargs(nets["G"], keys, r.mixing_prob))
    f, _ = run(nets["D"], state["params"]["D"], cols(state, "D"), augment(r, state, keys, _AUG_FAKE, fake), labels,
               True)
    loss = jnp.mean(generator_loss(r.loss, f))
    return loss, ({"loss": loss, "fake_logit": jnp.mean(f)}, new_cols)


def ema_decay(r: Recipe, step: jax.Array) -> jax.Array:
    """The G EMA's per-update decay: half-life `ema_half_life` images, ramped up to it as StyleGAN2-ADA does.

    With `ema_rampup` the half-life is min(half-life, images seen so far * ema_rampup), so the
    average forgets its random initialisation quickly early on.
    """
    if not r.ema_rampup:  # a constant, computed in float64 as before ramp-up existed
        return ema_beta(r.batch_size, r.ema_half_life)
    half_life = jnp.minimum(jnp.float32(r.ema_half_life), step.astype(jnp.float32) * r.batch_size * r.ema_rampup)
    return ema_beta(r.batch_size, jnp.maximum(half_life, 1e-8))


def g_step(nets: dict[str, Any], tx: optax.GradientTransformation, r: Recipe,
           state: State, batch: Batch, rng: jax.Array) -> tuple[State, dict]:
    """One G update, then its EMA when that is on."""
    keys = parallel.example_keys(rng, batch["image"].shape[0])
    z, labels = latents(nets["G"], keys)
    loss_fn = functools.partial(g_loss, nets, state, r, keys, z, labels)
    new, grads, (metrics, new_cols) = optim_lib.descend(state, "G", tx, loss_fn)
    metrics["grad_norm"] = optax.global_norm(grads)
    new = with_cols(new, "G", new_cols)
    if r.ema_half_life:
        beta = ema_decay(r, state["step"])
        new["ema"] = {"G": optax.incremental_update(new["params"]["G"], state["ema"]["G"], 1.0 - beta)}
    return new, metrics


def path_length_grads(gen: Any, variables: dict, ws: jax.Array, style_keys: jax.Array,
                      keys: jax.Array) -> jax.Array:
    """J_w^T y per example: the gradient of sum(G(w) * y) with respect to the ws, y ~ N(0, I) / sqrt(H W)."""
    images, vjp = jax.vjp(lambda w: gen.apply(variables, w, style_keys, method=gen.synthesize), ws)
    (grads,) = vjp(path_length_noise(keys, images.shape[1:]).astype(images.dtype))
    return grads.astype(jnp.promote_types(grads.dtype, jnp.float32))


def path_length_noise(keys: jax.Array, image_shape: tuple[int, ...]) -> jax.Array:
    """StyleGAN2's projection images y ~ N(0, I) / sqrt(H W), one per example key."""
    h, w = image_shape[:2]
    return draws(keys, _PL, lambda k: jax.random.normal(k, image_shape)) / np.sqrt(h * w)


def path_lengths(grads: jax.Array) -> jax.Array:
    """|J_w^T y| [B]: sqrt of the mean over layers of the squared norm over w's dimensions (StyleGAN2, Eq. 4)."""
    return jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=2), axis=1))


def pl_step(nets: dict[str, Any], tx: optax.GradientTransformation, r: Recipe,
            state: State, batch: Batch, rng: jax.Array) -> tuple[State, dict]:
    """A lazy path-length update of G on every `pl_batch_shrink`-th example: weight * (length - EMA mean)^2.

    Taking every k-th example (not the first B/k) selects the same examples under one device, jit
    and pmap whenever each device's batch is a multiple of k.
    """
    gen = nets["G"]
    keys = parallel.example_keys(rng, batch["image"].shape[0])[::r.pl_batch_shrink]
    z, labels = latents(gen, keys)
    style = style_kwargs(gen, keys, r.mixing_prob)

    def loss_fn(params):
        variables = {"params": params, **cols(state, "G")}
        ws = gen.apply(variables, z, labels, method=gen.map_latents)
        if r.mixing_prob:
            ws = gen.apply(variables, ws, labels, style["keys"], r.mixing_prob, method=gen.mix)
        lengths = path_lengths(path_length_grads(gen, variables, ws, style["keys"], keys))
        pl_mean = state["pl_mean"] + r.pl_decay * (parallel.pmean(jnp.mean(lengths)) - state["pl_mean"])
        penalty = jnp.mean(jnp.square(lengths - pl_mean))
        return r.pl_weight * penalty, {"pl_penalty": penalty, "pl_mean": pl_mean}

    new, _, metrics = optim_lib.descend(state, "G", tx, loss_fn)
    new["pl_mean"] = jax.lax.stop_gradient(metrics["pl_mean"])
    return new, metrics


def ada_step(target: float, batch_images: int, ada_kimg: float, state: State, batch: Batch,
             rng: jax.Array) -> tuple[State, dict]:
    """ADA's controller: move p toward the rate at which D's real-image sign statistic meets `target`."""
    del batch, rng
    a = state["ada"]
    r_t = a["sign_sum"] / jnp.maximum(a["steps"], 1.0)
    p = ada.adjust_p(a["p"], r_t, target=target, batch_images=batch_images, ada_kimg=ada_kimg)
    return dict(state, ada=ada_state() | {"p": p}), {"p": p, "r_t": r_t}


def eval_params(ema: bool, state: State) -> Any:
    """The generator params evaluation, previews and exports use: the EMA when it is on."""
    return (state["ema"] if ema else state["params"])["G"]


def sample(gen: Any, ema: bool, state: State, keys: jax.Array, psi: float = 1.0) -> jax.Array:
    """Images in [-1, 1] from the evaluation generator, one per key; `psi` < 1 truncates a style-based G's ws."""
    z, labels = latents(gen, keys)
    kwargs = style_kwargs(gen, keys, 0.0) | ({"psi": psi} if psi != 1.0 else {})
    return run(gen, eval_params(ema, state), cols(state, "G"), z, labels, False, **kwargs)[0]


def eval_disc(nets: dict[str, Any], sample_fn: Callable[[State, jax.Array], jax.Array],
              state: State, batch: Batch, rng: jax.Array) -> dict:
    """Per-example D logits on held-out real images and on fresh fakes, and whether it ranks the real one higher."""
    d = nets["D"]
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(batch["index"])
    labels = batch["label"] if nets["G"].num_classes else None
    r = run(d, state["params"]["D"], cols(state, "D"), to_unit(batch["image"]), labels, False)[0]
    f = run(d, state["params"]["D"], cols(state, "D"), sample_fn(state, keys), latents(nets["G"], keys)[1], False)[0]
    return {"d_real_logit": r, "d_fake_logit": f, "d_ranks_real_higher": (r > f).astype(jnp.float32)}


def eval_fid(config: ml_collections.ConfigDict, sample_fn: Callable[[State, jax.Array], jax.Array],
             state: State, source: Any, num_examples: int) -> dict[str, Any]:
    """FID, KID, precision/recall (and IS) of `gan.eval_samples` samples against the evaluation split."""
    hp = config.gan
    extractor, protocol, real = measurement(config, source, num_examples)
    fake = generative.sample_outputs(extractor, sampler(sample_fn, state, config.seed, hp.sample_batch_size),
                                     hp.eval_samples)
    results = generative.compare(real, fake, protocol)
    protocol_line = generative.describe(protocol, extractor, reference_name(config), len(real["features"]))
    return results | {"protocol": protocol_line}


def eval_truncation(config: ml_collections.ConfigDict, gen: Any, ema: bool, state: State, source: Any,
                    num_examples: int) -> dict[str, Any]:
    """FID, KID and precision/recall at each `gan.truncation_psi`: the fidelity/diversity trade-off of truncation.

    Lower psi pulls every w toward `w_avg`: precision rises and recall falls (StyleGAN, Karras et al. 2019).
    Keys are `<metric>_psi<psi>`, one protocol line for the sweep.
    """
    hp = config.gan
    _check_w_space(config, gen, "truncation")
    extractor, protocol, real = measurement(config, source, num_examples)
    out: dict[str, Any] = {}
    for psi in hp.truncation_psi:
        sample_fn = functools.partial(sample, gen, ema, psi=float(psi))
        fake = generative.sample_outputs(extractor, sampler(sample_fn, state, config.seed, hp.sample_batch_size),
                                         hp.eval_samples)
        results = generative.compare(real, fake, protocol)
        out |= {f"{k}_psi{psi:g}": v for k, v in results.items() if k in ("fid", "kid", "precision", "recall")}
    line = generative.describe(protocol, extractor, reference_name(config), len(real["features"]))
    return out | {"protocol": f"{line}; truncation psi in {list(hp.truncation_psi)} (cutoff: all layers)"}


def _check_w_space(config: ml_collections.ConfigDict, gen: Any, metric: str) -> None:
    """A metric of W (truncation, path length) needs a style-based generator."""
    if not getattr(gen, "per_example_keys", False):
        raise ConfigError(f"the {metric} metric needs a style-based generator (stylegan2_g); "
                          f"model.name = {config.model.name!r} has no W space")


PPL_EPSILON = 1e-4


def eval_ppl(config: ml_collections.ConfigDict, gen: Any, ema: bool, state: State, source: Any,
             num_examples: int) -> dict[str, Any]:
    """Perceptual path length in W (StyleGAN, Karras et al. 2019), measured with the config's extractor features.

    For `gan.ppl_samples` pairs (z0, z1) and t (0 for "end" sampling, U(0, 1) for "full"), the
    squared feature distance between the images at lerp(w0, w1, t) and t + 1e-4, divided by 1e-8,
    averaged after dropping values outside the 1st-99th percentiles; images are float on the uint8
    scale (not rounded) and use the constant noise, as NVIDIA's metric. The distance is the extractor's
    feature space, not LPIPS, so the figure (`ppl_w<sampling>_<extractor>`) ranks runs measured with
    the same extractor and is not comparable with published PPL.
    """
    del source, num_examples
    hp = config.gan
    _check_w_space(config, gen, "ppl")
    extractor = extractors.get_extractor(hp.extractor, weights=hp.extractor_weights or None)
    pair_fn = evaluators.compiled(functools.partial(_ppl_pair_images, gen, ema, hp.ppl_sampling))
    base = jax.random.fold_in(evaluators.eval_key(config.seed), _PL)
    dists = []
    for start in range(0, hp.ppl_samples, hp.sample_batch_size):
        keys = jax.vmap(lambda j: jax.random.fold_in(base, j))(start + jnp.arange(hp.sample_batch_size))
        a, b = (np.asarray(x) for x in jax.device_get(pair_fn(state, keys)))
        fa, fb = extractor.unquantised(a)["features"], extractor.unquantised(b)["features"]
        dists.append(np.sum(np.square(fa.astype(np.float64) - fb), axis=-1) / PPL_EPSILON**2)
    d = np.concatenate(dists)[:hp.ppl_samples]
    lo, hi = np.percentile(d, 1), np.percentile(d, 99)
    name = f"ppl_w{hp.ppl_sampling}_{extractor.name.split('@')[0]}"
    return {name: float(d[(d >= lo) & (d <= hi)].mean()),
            "ppl_protocol": f"{hp.ppl_samples} pairs, W space, t {hp.ppl_sampling}, epsilon {PPL_EPSILON:g}, "
                            f"const noise, squared {extractor.name} feature distance / epsilon^2, 1-99 percentile"}


def _ppl_pair_images(gen: Any, ema: bool, sampling: str, state: State, keys: jax.Array) -> tuple[jax.Array, ...]:
    """Images at lerp(w0, w1, t) and at t + epsilon, on the uint8 scale, for one batch of pair keys."""
    z0, labels = latents(gen, keys)
    z1 = draws(keys, _MIX, lambda k: jax.random.normal(k, (gen.latent_dim,)))
    t = draws(keys, _PL, jax.random.uniform) if sampling == "full" else jnp.zeros(keys.shape[:1])
    variables = {"params": eval_params(ema, state), **cols(state, "G")}
    w0, w1 = (gen.apply(variables, z, labels, method=gen.map_latents) for z in (z0, z1))
    t = t[:, None, None]
    wa, wb = w0 + t * (w1 - w0), w0 + (t + PPL_EPSILON) * (w1 - w0)
    images = gen.apply(variables, jnp.concatenate([wa, wb]), None, "const", method=gen.synthesize)
    images = (images.astype(jnp.float32) + 1.0) * 127.5
    return images[:keys.shape[0]], images[keys.shape[0]:]


def sampler(sample_fn: Callable[[State, jax.Array], jax.Array], state: State, seed: int,
            batch_size: int) -> generative.Sampler:
    """Batch i of uint8 samples, keyed by (seed, i): the same images for the same state and seed."""
    base = evaluators.eval_key(seed)

    def draw(i: int) -> np.ndarray:
        keys = jax.vmap(lambda j: jax.random.fold_in(base, j))(i * batch_size + jnp.arange(batch_size))
        return generative.to_uint8(jax.device_get(evaluators.compiled(sample_fn)(state, keys)))

    return draw


def generate(sample_fn: Callable[[State, jax.Array], jax.Array], state: State, batch: Batch,
             rng: jax.Array) -> dict[str, jax.Array]:
    """A fake set's GAN images: one "sample" of the evaluation generator per row, its noise keyed by the row's index."""
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(batch["index"])
    return {"sample": jnp.clip((sample_fn(state, keys).astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)}


def preview(sample_fn: Callable[[State, jax.Array], jax.Array], state: State, batch: Batch,
            rng: jax.Array) -> jax.Array:
    """Rows of 8: held-out real images, then 7 rows of samples from fixed latents."""
    real = batch["image"][:8].astype(jnp.float32) / 255.0
    fake = (sample_fn(state, jax.random.split(rng, 56)) + 1.0) / 2.0
    return jnp.concatenate([real, jnp.clip(fake, 0.0, 1.0)])


def export(name: str, fields: dict[str, Any], ema: bool, state: State) -> Export:
    """G's evaluation params and inference state (batch statistics; StyleGAN2's w_avg and constant noise)."""
    inference = {c: v for c, v in cols(state, "G").items() if c in ("batch_stats", "buffers")}
    return Export(name, fields, eval_params(ema, state), inference)
