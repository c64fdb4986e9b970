"""The light half of the config system: what config files import to build their ConfigDict.

Only ml_collections and the standard library are imported here (no JAX, optax or model code),
so loading a config file, `python -m train --config X --help` and most config errors are
instant. `base_config()` is every field the trainer reads, the family sections are each
family's defaults, and `model_section` lists a model's constructor fields from
`model_fields.json`, a snapshot of the model registry that a test keeps equal to it
(regenerate with `python -c "from train import config; config.write_model_fields()"`).
Validation against the live registry and the devices is `train.config.validate`, at start-up.
"""
from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import pathlib
from typing import Any, Iterable

import ml_collections

MODEL_FIELDS = pathlib.Path(__file__).with_name("model_fields.json")
GRID = "../shared/data/grid"  # the GRID corpus videos the shared data holds (relative to the repository)
GRID_TRAIN_SPEAKERS = ("bbaf2n", "brbk7n", "lbax4n", "lbbc2a")
GRID_TEST_SPEAKERS = ("lrwp9a", "lwbsza")  # held out: people, not frames, split the GRID configs


def base_config() -> ml_collections.ConfigDict:
    """Every field the trainer reads, with defaults. Config files override; nothing else is allowed."""
    c = ml_collections.ConfigDict()
    c.family = "vae"
    c.seed = 0
    c.batch_size = 128
    c.total_steps = 1000

    c.model = ml_collections.ConfigDict()
    c.model.name = "vae_conv"
    c.model.dtype = "float32"

    c.data = ml_collections.ConfigDict()
    c.data.source = "digits"
    c.data.train_split = "train"
    c.data.source_b = ""
    c.data.eval_source = ""
    c.data.eval_source_b = ""
    c.data.eval_split = "test"
    c.data.worker_count = 0
    c.data.resolution = 0

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.weight_decay = 0.0
    c.optim.grad_clip_norm = 0.0
    c.optim.update_keep_prob = 1.0
    c.optim.skip_nonfinite = False  # keep the old state when an update makes it non-finite, instead of stopping

    c.parallel = ml_collections.ConfigDict()
    c.parallel.strategy = "jit"
    c.parallel.multihost = False
    c.parallel.num_devices = 0

    c.log_every = 50
    c.preview_every = 500
    c.eval_every = 0

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 500
    c.checkpoint.max_to_keep = 3
    c.checkpoint.keep_every = 0

    c.eval = ml_collections.ConfigDict()
    c.eval.metrics = ()
    c.eval.batch_size = 250
    c.eval.num_examples = 0
    c.eval.detector = ""  # the pinned detector export `detectability` scores a run's fakes with (train.metrics.detectability)
    return c


def vae() -> ml_collections.ConfigDict:
    """The `config.vae` defaults."""
    s = ml_collections.ConfigDict()
    s.beta = 1.0
    s.kl_warmup_steps = 0
    s.iwae_samples = 5000
    s.iwae_chunk = 5000  # decoded rows per call, small enough to stay in cache: 2.2 s vs 13 s at 50,000 (benchmarks/iwae.py)
    return s


def gan() -> ml_collections.ConfigDict:
    """The `config.gan` defaults (DCGAN with the non-saturating loss)."""
    s = ml_collections.ConfigDict()
    s.loss = "non_saturating"
    s.n_critic = 1
    s.gp_weight = 10.0
    s.r1_gamma = 0.0
    s.r1_every = 16
    s.ema_half_life_images = 0.0
    s.ema_rampup = 0.0
    s.diffaugment = ""
    s.mirror = False
    s.d_learning_rate = 0.0
    s.style_mixing = 0.0
    s.pl_weight = 0.0
    s.pl_every = 4
    s.pl_decay = 0.01
    s.pl_batch_shrink = 2
    s.lazy_adam = False
    s.ada_target = 0.0
    s.ada_p = 0.0
    s.ada_pipe = "bgc"
    s.ada_kimg = 500.0
    s.ada_every = 4
    s.discriminator = model_section("dcgan_d")
    s.extractor = "inception_v3_fid"
    s.extractor_weights = ""
    s.cache_dir = ""
    s.eval_samples = 10_000
    s.truncation_psi = (0.5, 0.7, 1.0)
    s.ppl_samples = 10_000
    s.ppl_sampling = "end"
    s.sample_batch_size = 500
    s.kid_subset_size = 1000
    s.kid_subsets = 100
    s.pr_k = 3
    return s


def stylegan2(*, resolution: int, batch_size: int, channel_base: int, channel_max: int = 512,
              latent_dim: int = 512, mapping_layers: int = 8, mbstd_group: int = 4, num_bf16_res: int = 0,
              conv_clamp: float = 0.0, r1_gamma: float | None = None, ema_kimg: float | None = None,
              ema_rampup: float = 0.0, learning_rate: float = 0.0025, style_mixing: float = 0.9,
              pl_weight: float = 2.0) -> ml_collections.ConfigDict:
    """A GAN config with StyleGAN2-ADA's recipe: what its configurations share, with their own values as arguments.

    Shared: the non-saturating loss, lazy R1 every 16 steps and path length every 4 (batch shrink 2)
    with Adam's lr and betas rescaled for the intervals, Adam betas (0, 0.99), w_dim = latent_dim.
    Unset, `r1_gamma` and `ema_kimg` follow NVIDIA's `auto` rules: 0.0002 res^2 / batch and
    batch * 10 / 32 kimg. The caller adds data, steps and evaluation.
    """
    c = base_config()
    c.family = "gan"
    c.gan = gan()
    nets = dict(channel_base=channel_base, channel_max=channel_max, num_bf16_res=num_bf16_res, conv_clamp=conv_clamp)
    c.model = model_section("stylegan2_g", latent_dim=latent_dim, w_dim=latent_dim, mapping_layers=mapping_layers,
                            **nets)
    c.gan.discriminator = model_section("stylegan2_d", mbstd_group=mbstd_group, **nets)
    c.batch_size = batch_size
    c.gan.r1_gamma = 0.0002 * resolution**2 / batch_size if r1_gamma is None else r1_gamma
    c.gan.r1_every = 16
    c.gan.style_mixing = style_mixing
    c.gan.pl_weight = pl_weight
    c.gan.pl_every = 4
    c.gan.lazy_adam = True
    c.gan.ema_half_life_images = 1000.0 * (batch_size * 10 / 32 if ema_kimg is None else ema_kimg)
    c.gan.ema_rampup = ema_rampup
    c.optim.name = "adam"
    c.optim.learning_rate = learning_rate
    c.optim.b1 = 0.0
    c.optim.b2 = 0.99
    return c


def stylegan2_smoke(config: ml_collections.ConfigDict) -> None:
    """`smoke`, plus a StyleGAN2 narrow enough to compile and step in seconds; evaluation by D's logits only."""
    smoke(config)
    for net in (config.model, config.gan.discriminator):
        net.channel_base, net.channel_max = 256, 8
        net.num_bf16_res = min(net.num_bf16_res, 1)
    config.model.latent_dim = config.model.w_dim = 16
    config.model.mapping_layers = 2
    config.gan.discriminator.mbstd_group = min(config.gan.discriminator.mbstd_group, 2)
    config.eval.metrics = ("disc",)
    config.gan.eval_samples = 64


def swap() -> ml_collections.ConfigDict:
    """The `config.swap` defaults (DeepFaceLab SAEHD's)."""
    s = ml_collections.ConfigDict()
    s.masked_training = True
    s.dssim_weight = 10.0
    s.mse_weight = 10.0
    s.mask_weight = 10.0
    s.eyes_mouth_prio = False
    s.eyes_mouth_weight = 300.0
    s.random_warp = True
    s.warp_strength = 1.0
    s.flip_a = False
    s.flip_b = True
    s.color_transfer = "none"
    s.ema_decay = 0.0
    s.eval_ssim_window = 11
    s.init_from = ""
    s.reinit = ()
    s.gan_power = 0.0
    s.gan_patch_size = 0
    s.gan_dims = 16
    s.true_face_power = 0.0
    return s


def detect() -> ml_collections.ConfigDict:
    """The `config.detect` defaults: Wang et al.'s (2020) training augmentation at p = 0.5 ("Blur+JPEG (0.5)")."""
    s = ml_collections.ConfigDict()
    s.balance = True  # class-balanced BCE: each class weighs half, whatever its share of the batch
    s.augment = ml_collections.ConfigDict()  # data.degrade.DetectorAugment's fields
    s.augment.p_blur = 0.5
    s.augment.blur_sigma = (0.0, 3.0)
    s.augment.p_jpeg = 0.5
    s.augment.jpeg_quality = (30, 100)
    s.augment.p_crop = 0.0
    s.augment.crop_scale = (0.8, 1.0)
    s.augment.p_flip = 0.5
    s.sweep = ("jpeg90", "jpeg50", "jpeg30", "h264_crf23", "h264_crf40", "blur1", "blur2", "resize0.5")
    return s


def reenact() -> ml_collections.ConfigDict:
    """The `config.reenact` defaults: FOMM's vox-256 losses and schedule (train/families/reenact.py says what each does)."""
    s = ml_collections.ConfigDict()
    s.hflip = True  # FOMM's augmentation (data/pair_augment.py): both frames of a pair mirrored alike, p = 0.5
    s.jitter = (0.1, 0.1, 0.1, 0.1)  # and recoloured alike: brightness, contrast, saturation, hue; () = off
    s.scales = (1.0, 0.5, 0.25, 0.125)  # reconstruction pyramid, anti-aliased as FOMM's
    s.vgg_weights = ""  # torchvision's vgg19 file: the VGG19 perceptual pyramid; empty: L1 + DSSIM at the same scales
    s.perceptual_weights = (10.0, 10.0, 10.0, 10.0, 10.0)  # relu1_1 .. relu5_1
    s.l1_weight = 10.0
    s.dssim_weight = 10.0
    s.equivariance_value = 10.0
    s.equivariance_jacobian = 10.0  # fomm with estimate_jacobian only
    s.sigma_affine = 0.05
    s.sigma_tps = 0.005
    s.points_tps = 5
    s.warp_weight = 10.0  # tps only: driving encoder maps vs warped source maps
    s.bg_weight = 10.0  # tps with background_affine: |A(s, d) A(d, s) - I|
    s.bg_start_step = 0  # TPSMM switches the background predictor on after 10 epochs
    s.dropout_p = 0.0  # TPSMM's contribution-map dropout: the largest p (0.3); 0 = off
    s.dropout_start_p = 0.1
    s.dropout_ramp_steps = 1  # p grows by dropout_p every dropout_ramp_steps steps from dropout_start_p
    s.dropout_steps = 0  # dropout while step < dropout_steps
    s.gan_weight = 0.0  # LSGAN with feature matching (FOMM's vox-adv: 1); 0 = off
    s.feature_matching = (10.0, 10.0, 10.0, 10.0)  # per discriminator block
    s.d_scales = (1.0,)
    s.d_block_expansion = 32
    s.d_max_features = 512
    s.d_num_blocks = 4
    s.d_use_kp = True  # the driving keypoints' heatmaps beside the image
    s.d_spectral_norm = True
    s.lr_milestones = (0.6, 0.9)  # fractions of total_steps where the learning rate is multiplied by lr_decay
    s.lr_decay = 0.1
    s.ema_decay = 0.0  # 0 = off; evaluation, previews and exports use the EMA when on
    return s


def model_section(name: str, **fields: Any) -> ml_collections.ConfigDict:
    """A `config.model` holding every constructor field of registered model `name`, defaults filled in.

    Listing all fields makes each one overridable from the command line and recorded in the
    frozen config; `image_shape` comes from the data and `param_dtype` stays float32.
    """
    known = model_field_defaults()
    if name not in known:
        raise _config_error(_unknown("model.name", name, known, what="model"))
    section = ml_collections.ConfigDict({"name": name})
    for key, default in known[name].items():
        section[key] = tuple(default) if isinstance(default, list) else default
    for key, value in fields.items():
        if key not in section:
            raise _config_error(_unknown(f"model.{key}", key, section.keys(), what=f"field of model {name!r}"))
        section[key] = value
    return section


@functools.cache
def model_field_defaults() -> dict[str, dict[str, Any]]:
    """Each registered model's config fields and their defaults, as `model_fields.json` records them."""
    return json.loads(MODEL_FIELDS.read_text())


# zoo.reenact.CPU_PRESETS less image_shape (which the data give), written out so configs load without JAX;
# tests/test_reenact_family.py keeps the configs' models equal to the presets.
REENACT_CPU_FIELDS = {
    "fomm": dict(kp_block_expansion=16, kp_max_features=256, kp_num_blocks=3, dm_block_expansion=16, dm_max_features=256,
                 dm_num_blocks=3, gen_block_expansion=16, gen_max_features=128, gen_num_bottleneck_blocks=2),
    "tpsmm": dict(kp_widths=(16, 32, 64, 128), kp_stages=(1, 1, 1, 1), dm_block_expansion=16, dm_max_features=256,
                  dm_num_blocks=3, gen_block_expansion=16, gen_max_features=128, gen_num_bottleneck_blocks=1),
}


def fomm_adam(config: ml_collections.ConfigDict) -> None:
    """FOMM's and TPSMM's optimiser: Adam at 2e-4 with betas (0.5, 0.999); `reenact.lr_milestones` decays it."""
    config.optim.name = "adam"
    config.optim.learning_rate = 2e-4
    config.optim.b1, config.optim.b2 = 0.5, 0.999


def grid_faces(speakers: Iterable[str], size: int, every: int = 1) -> str:
    """The speakers' aligned GRID faces as one source spec, one video each (`aligned:` parts joined by " + ")."""
    options = f";every={every}" if every > 1 else ""
    return " + ".join(f"aligned:{GRID}/{s}.mpg;size={size}{options}" for s in speakers)


def apply_variant(config: ml_collections.ConfigDict, arg: str | None, variants: dict) -> ml_collections.ConfigDict:
    """Apply the named variant (`file.py:smoke`); an unknown name lists the valid ones."""
    if not arg:
        return config
    if arg not in variants:
        raise _config_error(f"unknown config variant {arg!r}; choose one of: {', '.join(sorted(variants))}")
    variants[arg](config)
    return config


def smoke(config: ml_collections.ConfigDict) -> None:
    """Shrink any config to a few steps on a few examples: what the tests run for every file."""
    config.total_steps = 4
    config.batch_size = 16
    config.log_every = 1
    config.preview_every = 4
    config.eval_every = 4
    config.checkpoint.every = 2
    config.eval.batch_size = 16
    config.eval.num_examples = 32
    config.optim.warmup_steps = 0


def load(spec: str) -> ml_collections.ConfigDict:
    """The config from `path/to/file.py[:variant]`, as `--config` would build it."""
    import pathlib

    path, _, arg = spec.partition(":")
    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {file} not found; configs live in configs/*.py")
    module_spec = importlib.util.spec_from_file_location(f"_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def _unknown(path: str, key: str, valid: Iterable[str], what: str = "config field") -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {path!r}.{hint} Valid fields here: {', '.join(valid)}"


def _config_error(message: str) -> Exception:
    """A ConfigError, imported only when one is raised (zoo's package import is not light)."""
    from zoo.errors import ConfigError

    return ConfigError(message)
