"""GAN family: the discriminator and the generator as separate named steps, with the losses papers compare.

Steps, in order within one trainer step: "D" (every step), "D_r1" (lazy R1 every `r1_every` steps,
StyleGAN2's scheme, when `r1_gamma > 0`) and "G" (every `n_critic` steps), so `total_steps`
counts discriminator updates and the generator makes total_steps / n_critic of them.

Losses (D logits r on real and f on fake images):
- "non_saturating" (Goodfellow et al. 2014): L_D = softplus(-r) + softplus(f), L_G = softplus(-f);
- "hinge" (Lim & Ye 2017; SNGAN, BigGAN): L_D = relu(1 - r) + relu(1 + f), L_G = -f;
- "wgan_gp" (Gulrajani et al. 2017): L_D = f - r + gp_weight * (|grad D(x_hat)| - 1)^2 on random
  interpolates x_hat of real and fake, L_G = -f.
R1 (Mescheder et al. 2018) adds r1_gamma / 2 * |grad D(x_real)|^2. DiffAugment (Zhao et al. 2020)
applies one policy to every image the discriminator sees, real and fake, in every step. The
generator's EMA (Karras et al.) uses StyleGAN's half-life in images: beta = 0.5^(batch / half-life);
evaluation, previews and exports use it when it is on.

Every random draw (latents, fake labels, augmentations, interpolation weights) is keyed by the
example's global index, and batch norm syncs over the data axis under pmap, so one device, jit on
eight and pmap on eight reach the same parameters.

Evaluation: the host evaluator "fid" draws `eval_samples` images, quantises them to uint8, and
reports FID, KID, precision/recall and (with a classifier extractor) IS against the evaluation split
through `gan.extractor`, with the protocol line naming all of it. The compiled evaluator "disc"
reports the discriminator's mean logits on held-out real images and on fresh fakes, and how often
it scores the real image of a pair above the fake (0.5 is a discriminator that cannot tell).
"""
from __future__ import annotations

import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from train import config as config_lib
from train import diffaugment, evaluators, parallel
from train import optim as optim_lib
from train.config import ConfigError, model_kwargs
from train.families.base import Batch, Export, Family, State, Step
from train.metrics import extractors, features, generative
from zoo import registry

LOSSES = ("non_saturating", "hinge", "wgan_gp")
METRICS = ("fid",)
_Z, _LABEL, _AUG_REAL, _AUG_FAKE, _MIX = range(5)  # fold_in tags: one stream per kind of draw


def section() -> ml_collections.ConfigDict:
    """The `config.gan` defaults (DCGAN with the non-saturating loss)."""
    s = ml_collections.ConfigDict()
    s.loss = "non_saturating"
    s.n_critic = 1
    s.gp_weight = 10.0
    s.r1_gamma = 0.0
    s.r1_every = 16
    s.ema_half_life_images = 0.0
    s.diffaugment = ""
    s.d_learning_rate = 0.0
    s.discriminator = config_lib.model_section("dcgan_d")
    s.extractor = "inception_v3_fid"
    s.extractor_weights = ""
    s.cache_dir = ""
    s.eval_samples = 10_000
    s.sample_batch_size = 500
    s.kid_subset_size = 1000
    s.kid_subsets = 100
    s.pr_k = 3
    return s


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


def ema_beta(batch_size: int, half_life_images: float) -> float:
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
    for field in ("n_critic", "r1_every", "eval_samples", "sample_batch_size", "kid_subsets", "pr_k"):
        if hp[field] < 1:
            raise ConfigError(f"gan.{field} = {hp[field]} must be >= 1")
    for field in ("gp_weight", "r1_gamma", "ema_half_life_images", "d_learning_rate"):
        if hp[field] < 0:
            raise ConfigError(f"gan.{field} = {hp[field]} must be >= 0 (0 switches it off)")
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
    gen = nets["G"]
    num_classes = gen.num_classes
    latent = gen.latent_dim
    policy = diffaugment.parse_policy(hp.diffaugment)
    g_updates = -(-config.total_steps // hp.n_critic)
    optim_d = ml_collections.ConfigDict(config.optim.to_dict())
    optim_d.learning_rate = hp.d_learning_rate or config.optim.learning_rate
    tx = {"G": optim_lib.make(config.optim, g_updates), "D": optim_lib.make(optim_d, config.total_steps)}
    beta = ema_beta(config.batch_size, hp.ema_half_life_images) if hp.ema_half_life_images else 0.0
    d_spec = config.data.eval_source or config.data.source
    reference = reference_name(config)

    def init(rng: jax.Array, batch: Batch) -> State:
        if num_classes and "label" not in batch:
            raise ConfigError(f"model.num_classes = {num_classes} but the data {d_spec!r} have no labels; "
                              "use a labelled source or set num_classes = 0 in model and gan.discriminator")
        keys = dict(zip(nets, jax.random.split(rng, len(nets))))
        variables = {name: net.init(keys[name], *net.example_inputs()) for name, net in nets.items()}
        params = {name: v["params"] for name, v in variables.items()}
        collections = {name: {c: v[c] for c in v if c != "params"} for name, v in variables.items()}
        state = {"step": jnp.int32(0), "params": params,
                 "opt_state": {name: tx[name].init(p) for name, p in params.items()}}
        if any(collections.values()):
            state["collections"] = {name: c for name, c in collections.items() if c}
        return state | ({"ema": {"G": params["G"]}} if beta else {})

    def cols(state: State, net: str) -> dict:
        return state.get("collections", {}).get(net, {})

    def run(net: str, params: Any, net_cols: dict, x: jax.Array, labels: jax.Array | None,
            train: bool) -> tuple[jax.Array, dict]:
        """Apply a network; in training its updated collections (BN stats, spectral u) come back too."""
        variables = {"params": params, **net_cols}
        if train and net_cols:
            return nets[net].apply(variables, x, labels, train=True, mutable=list(net_cols))
        return nets[net].apply(variables, x, labels, train=train), net_cols

    def draws(keys: jax.Array, tag: int, fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
        return jax.vmap(lambda k: fn(jax.random.fold_in(k, tag)))(keys)

    def latents(keys: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        z = draws(keys, _Z, lambda k: jax.random.normal(k, (latent,)))
        labels = draws(keys, _LABEL, lambda k: jax.random.randint(k, (), 0, num_classes)) if num_classes else None
        return z, labels

    def augment(keys: jax.Array, tag: int, x: jax.Array) -> jax.Array:
        if not policy:
            return x
        return jax.vmap(lambda k, v: diffaugment.diff_augment(v[None], jax.random.fold_in(k, tag), policy)[0])(keys, x)

    def real_inputs(batch: Batch, keys: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        return augment(keys, _AUG_REAL, to_unit(batch["image"])), batch["label"] if num_classes else None

    def d_step(state: State, batch: Batch, rng: jax.Array) -> tuple[State, dict]:
        keys = parallel.example_keys(rng, batch["image"].shape[0])
        real, real_labels = real_inputs(batch, keys)
        z, fake_labels = latents(keys)
        fake = jax.lax.stop_gradient(run("G", state["params"]["G"], cols(state, "G"), z, fake_labels, True)[0])
        fake = augment(keys, _AUG_FAKE, fake)

        def loss_fn(params):
            r, new_cols = run("D", params, cols(state, "D"), real, real_labels, True)
            f, new_cols = run("D", params, new_cols, fake, fake_labels, True)
            loss = jnp.mean(discriminator_loss(hp.loss, r, f))
            metrics = {"loss": loss, "real_logit": jnp.mean(r), "fake_logit": jnp.mean(f)}
            if hp.loss == "wgan_gp":
                eps = draws(keys, _MIX, lambda k: jax.random.uniform(k, (1, 1, 1)))
                mix = eps * real + (1.0 - eps) * fake
                gp = gradient_penalty(lambda x: run("D", params, new_cols, x, real_labels, True)[0], mix)
                metrics["gradient_penalty"] = gp
                loss = loss + hp.gp_weight * gp
            return loss, (metrics | {"total_loss": loss}, new_cols)

        new, grads, (metrics, new_cols) = optim_lib.descend(state, "D", tx["D"], loss_fn)
        metrics["grad_norm"] = optax.global_norm(grads)
        return with_cols(new, "D", new_cols), metrics

    def r1_step(state: State, batch: Batch, rng: jax.Array) -> tuple[State, dict]:
        real, labels = real_inputs(batch, parallel.example_keys(rng, batch["image"].shape[0]))

        def loss_fn(params):
            penalty = r1_penalty(lambda x: run("D", params, cols(state, "D"), x, labels, True)[0], real)
            return 0.5 * hp.r1_gamma * hp.r1_every * penalty, {"r1_penalty": penalty}

        new, _, metrics = optim_lib.descend(state, "D", tx["D"], loss_fn)
        return new, metrics

    def g_step(state: State, batch: Batch, rng: jax.Array) -> tuple[State, dict]:
        keys = parallel.example_keys(rng, batch["image"].shape[0])
        z, labels = latents(keys)

        def loss_fn(params):
            fake, new_cols = run("G", params, cols(state, "G"), z, labels, True)
            f, _ = run("D", state["params"]["D"], cols(state, "D"), augment(keys, _AUG_FAKE, fake), labels, True)
            loss = jnp.mean(generator_loss(hp.loss, f))
            return loss, ({"loss": loss, "fake_logit": jnp.mean(f)}, new_cols)

        new, grads, (metrics, new_cols) = optim_lib.descend(state, "G", tx["G"], loss_fn)
        metrics["grad_norm"] = optax.global_norm(grads)
        new = with_cols(new, "G", new_cols)
        if beta:
            new["ema"] = {"G": optax.incremental_update(new["params"]["G"], state["ema"]["G"], 1.0 - beta)}
        return new, metrics

    def with_cols(state: State, net: str, new_cols: dict) -> State:
        if not new_cols:
            return state
        return dict(state, collections=dict(state["collections"], **{net: new_cols}))

    def eval_params(state: State) -> Any:
        return (state["ema"] if beta else state["params"])["G"]

    def sample(state: State, keys: jax.Array) -> jax.Array:
        """Images in [-1, 1] from the evaluation generator, one per key."""
        z, labels = latents(keys)
        return run("G", eval_params(state), cols(state, "G"), z, labels, False)[0]

    def eval_disc(state: State, batch: Batch, rng: jax.Array) -> dict:
        keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(batch["index"])
        labels = batch["label"] if num_classes else None
        r = run("D", state["params"]["D"], cols(state, "D"), to_unit(batch["image"]), labels, False)[0]
        f = run("D", state["params"]["D"], cols(state, "D"), sample(state, keys), latents(keys)[1], False)[0]
        return {"d_real_logit": r, "d_fake_logit": f, "d_ranks_real_higher": (r > f).astype(jnp.float32)}

    def eval_fid(state: State, source: Any, num_examples: int) -> dict[str, Any]:
        extractor, protocol, real = measurement(config, source, num_examples)
        fake = generative.sample_outputs(extractor, sampler(state, config.seed, hp.sample_batch_size),
                                         hp.eval_samples)
        results = generative.compare(real, fake, protocol)
        return results | {"protocol": generative.describe(protocol, extractor, reference, len(real["features"]))}

    def sampler(state: State, seed: int, batch_size: int) -> generative.Sampler:
        """Batch i of uint8 samples, keyed by (seed, i): the same images for the same state and seed."""
        base = evaluators.eval_key(seed)

        def draw(i: int) -> np.ndarray:
            keys = jax.vmap(lambda j: jax.random.fold_in(base, j))(i * batch_size + jnp.arange(batch_size))
            return generative.to_uint8(jax.device_get(evaluators.compiled(sample)(state, keys)))

        return draw

    def preview(state: State, batch: Batch, rng: jax.Array) -> jax.Array:
        """Rows of 8: held-out real images, then 7 rows of samples from fixed latents."""
        real = batch["image"][:8].astype(jnp.float32) / 255.0
        fake = (sample(state, jax.random.split(rng, 56)) + 1.0) / 2.0
        return jnp.concatenate([real, jnp.clip(fake, 0.0, 1.0)])

    def export(state: State) -> Export:
        fields = dict(g_kw, dtype=jnp.dtype(g_kw["dtype"]).name, image_shape=list(image_shape))
        inference = {c: v for c, v in cols(state, "G").items() if c == "batch_stats"}
        return Export(config.model.name, fields, eval_params(state), inference)

    steps = {"D": Step(d_step)}
    if hp.r1_gamma:
        steps["D_r1"] = Step(r1_step, every=hp.r1_every)
    steps["G"] = Step(g_step, every=hp.n_critic)
    return Family(
        init=init,
        steps=steps,
        preview=preview,
        preview_columns=8,
        evaluators={"disc": eval_disc},
        default_metrics=METRICS,
        export=export,
        host_evaluators={"fid": eval_fid},
    )

