"""The training steps the PyTorch comparison benchmarks, as plain data both workers read.

Neither torch nor JAX is imported here, so the JAX worker's memory holds no torch and the torch
worker's no JAX. The table of what each entry mirrors is in `benchmarks/torch_twins.py`;
`benchmarks.compare_torch.check_spec` asserts every entry against the zoo config it names.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any


@dataclasses.dataclass(frozen=True)
class Spec:
    """One benchmarked step: the config the JAX side runs and every field the twin needs of it."""

    family: str
    config: str  # config file the JAX side loads; "" is train.config.base_config()'s VAE defaults
    model: str
    fields: dict[str, Any]
    image: tuple[int, int, int]  # H, W, C
    batch: int
    optim: dict[str, Any]
    hparams: dict[str, Any]  # the family section's fields the step reads
    disc: dict[str, Any] = dataclasses.field(default_factory=dict)  # GAN: gan.discriminator
    masks: bool = False  # swap: the data carry "mask" and "em_mask"
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # config fields the comparison sets, both sides

    @property
    def steps_every(self) -> dict[str, int]:
        """A GAN's named steps and their intervals as `train.families.gan.make` schedules them; {} for one-step families."""
        if self.family != "gan":
            return {}
        hp = self.hparams
        every = {"D": 1}
        if hp.get("r1_gamma"):
            every["D_r1"] = hp["r1_every"]
        every["G"] = hp["n_critic"]
        if hp.get("pl_weight"):
            every["G_pl"] = hp["pl_every"] * hp["n_critic"]
        if hp.get("ada_target"):
            every["ada"] = hp["ada_every"]
        return every

    @property
    def cycle(self) -> int:
        """Trainer steps after which the schedule repeats (StyleGAN2: 16, one lazy R1 and four path-length steps).

        The benchmarks time whole cycles, so a timed window holds the same work on both sides.
        """
        return math.lcm(1, *self.steps_every.values())

    @property
    def images_per_step(self) -> int:
        """Images one step trains on at the spec's batch size."""
        return self.images(self.batch)

    def images(self, batch: int) -> int:
        """Images one step trains on at `batch`: both sides of each swap pair, the real batch of a GAN."""
        return 2 * batch if self.family == "swap" else batch


_ADAM = dict(name="adam", learning_rate=1e-3, b1=0.9, b2=0.999, warmup_steps=0, grad_clip_norm=0.0)
_SWAP_OFF = dict(ema_decay=0.0, gan_power=0.0, true_face_power=0.0)
# sections.stylegan2's recipe; ADA stays off in the comparison (see the stylegan2_64 entry).
_STYLEGAN2 = dict(loss="non_saturating", n_critic=1, diffaugment="", d_learning_rate=0.0, style_mixing=0.9,
                  pl_weight=2.0, pl_every=4, pl_decay=0.01, pl_batch_shrink=2, r1_every=16, lazy_adam=True,
                  mirror=True, ada_target=0.0, ada_p=0.0)


def _stylegan2_nets(base: int, cmax: int, latent: int, mapping: int, mbstd: int, bf16: int, clamp: float
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every field of stylegan2_g and stylegan2_d as sections.stylegan2 sets them."""
    nets = dict(num_classes=0, channel_base=base, channel_max=cmax, num_bf16_res=bf16, conv_clamp=clamp)
    return (dict(nets, latent_dim=latent, w_dim=latent, mapping_layers=mapping, mapping_lr_mul=0.01, w_avg_beta=0.995),
            dict(nets, name="stylegan2_d", mbstd_group=mbstd, mbstd_channels=1, mapping_layers=8))


_SG64_G, _SG64_D = _stylegan2_nets(1024, 64, 64, 2, 4, 0, 0.0)

# Every field of the `fomm` model (zoo.reenact.Reenactor's defaults: FOMM's vox-256 networks), and the
# 64 px CPU preset (zoo.reenact.CPU_PRESETS["fomm"], configs/reenact_fomm_synthetic.py).
_FOMM = dict(motion="fomm", num_kp=10, kp_scale_factor=0.25, kp_block_expansion=32, kp_max_features=1024,
             kp_num_blocks=5, kp_padding=0, temperature=0.1, estimate_jacobian=True, kp_widths=(64, 128, 256, 512),
             kp_stages=(2, 2, 2, 2), background_affine=False, dm_block_expansion=64, dm_max_features=1024,
             dm_num_blocks=5, dm_scale_factor=0.25, kp_variance=0.01, estimate_occlusion=True, multi_mask=False,
             tps_regularization=0.01, gen_block_expansion=64, gen_max_features=512, gen_num_down_blocks=2,
             gen_num_bottleneck_blocks=6, norm="batch")
_FOMM_64 = dict(_FOMM, kp_block_expansion=16, kp_max_features=256, kp_num_blocks=3, dm_block_expansion=16,
                dm_max_features=256, dm_num_blocks=3, gen_block_expansion=16, gen_max_features=128,
                gen_num_bottleneck_blocks=2)
# sections.reenact()'s losses as FOMM's configs set them, GAN off; the learning-rate milestones (60% and
# 90% of total_steps) lie far beyond any benchmark's steps, so the twin keeps the first rate.
_FOMM_ADAM = dict(_ADAM, learning_rate=2e-4, b1=0.5, weight_decay=0.0)
_REENACT = dict(scales=(1.0, 0.5, 0.25, 0.125), vgg_weights="", l1_weight=10.0, dssim_weight=10.0,
                equivariance_value=10.0, equivariance_jacobian=10.0, sigma_affine=0.05, sigma_tps=0.005, points_tps=5,
                gan_weight=0.0, ema_decay=0.0, dropout_steps=0, lr_milestones=(0.6, 0.9), lr_decay=0.1)
_SG256_G, _SG256_D = _stylegan2_nets(16384, 512, 512, 8, 8, 4, 256.0)

SPECS: dict[str, Spec] = {
    "vae_conv64": Spec(
        "vae", "", "vae_conv", dict(latent_dim=32, channels=(32, 64), hidden=256, activation="silu", likelihood="bernoulli"),
        (64, 64, 3), 128, _ADAM, dict(beta=1.0, kl_warmup_steps=0)),
    "df64": Spec(
        "swap", "configs/swap_df_synthetic.py", "swap_df",
        dict(resolution=64, opts="ud", ae_dims=128, e_dims=24, d_dims=24, d_mask_dims=8), (64, 64, 3), 16,
        dict(_ADAM, warmup_steps=100, grad_clip_norm=1.0),
        dict(masked_training=False, dssim_weight=10.0, mse_weight=10.0, mask_weight=10.0, eyes_mouth_prio=True,
             eyes_mouth_weight=300.0, **_SWAP_OFF), masks=True),
    "df128": Spec(
        "swap", "configs/swap_df_grid.py:centre", "swap_df",
        dict(resolution=128, opts="ud", ae_dims=128, e_dims=32, d_dims=32, d_mask_dims=8), (128, 128, 3), 8,
        dict(_ADAM, name="adabelief", learning_rate=2e-4, warmup_steps=100, grad_clip_norm=1.0),
        dict(masked_training=False, dssim_weight=10.0, mse_weight=10.0, mask_weight=0.0, eyes_mouth_prio=False,
             eyes_mouth_weight=300.0, **_SWAP_OFF)),
    "dcgan64": Spec(
        "gan", "configs/dcgan_celeba64.py", "dcgan_g", dict(latent_dim=100, ngf=64), (64, 64, 3), 128,
        dict(_ADAM, learning_rate=2e-4, b1=0.5),
        dict(loss="non_saturating", n_critic=1, r1_gamma=0.0, ema_half_life_images=0.0, diffaugment="",
             d_learning_rate=0.0),
        disc=dict(name="dcgan_d", ndf=64, norm="batch")),
    # The config trains with ADA (target 0.6); the comparison switches it off on both sides (the twin has
    # no ADA pipeline), so both run the plain StyleGAN2 steps: D, lazy R1, G, lazy path length, x-flips.
    "stylegan2_64": Spec(
        "gan", "configs/stylegan2_synthetic_faces.py", "stylegan2_g", _SG64_G, (64, 64, 3), 32,
        dict(_ADAM, learning_rate=0.0025, b1=0.0, b2=0.99),
        dict(_STYLEGAN2, r1_gamma=0.0002 * 64**2 / 32, ema_half_life_images=10_000.0, ema_rampup=0.05),
        disc=_SG64_D, overrides={"gan.ada_target": 0.0}),
    # For the GPU benchmark (JAX side) and its FLOP count: paper256 as configured, ADA already off.
    "stylegan2_256": Spec(
        "gan", "configs/stylegan2_ffhq256.py", "stylegan2_g", _SG256_G, (256, 256, 3), 64,
        dict(_ADAM, learning_rate=0.0025, b1=0.0, b2=0.99),
        dict(_STYLEGAN2, r1_gamma=1.0, ema_half_life_images=20_000.0, ema_rampup=0.0), disc=_SG256_D),
    "fomm64": Spec(
        "reenact", "configs/reenact_fomm_synthetic.py", "fomm", _FOMM_64, (64, 64, 3), 16, _FOMM_ADAM, _REENACT),
    # For the GPU benchmark (JAX side) and its FLOP count: the published networks at 256 px and batch 40
    # (vox-256.yaml). The reconstruction is L1 + DSSIM at FOMM's four scales, not the config's VGG19
    # pyramid: no VGG19 file travels to the device, so the VGG19 forward and backward are not timed.
    "fomm256": Spec(
        "reenact", "configs/reenact_fomm_vox256.py", "fomm", _FOMM, (256, 256, 3), 40, _FOMM_ADAM, _REENACT,
        overrides={"reenact.vgg_weights": ""}),
}
