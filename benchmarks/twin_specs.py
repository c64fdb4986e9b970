"""The training steps the PyTorch comparison benchmarks, as plain data both workers read.

Neither torch nor JAX is imported here, so the JAX worker's memory holds no torch and the torch
worker's no JAX. The table of what each entry mirrors is in `benchmarks/torch_twins.py`;
`benchmarks.compare_torch.check_spec` asserts every entry against the zoo config it names.
"""
from __future__ import annotations

import dataclasses
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

    @property
    def images_per_step(self) -> int:
        """Images one step trains on at the spec's batch size."""
        return self.images(self.batch)

    def images(self, batch: int) -> int:
        """Images one step trains on at `batch`: both sides of each swap pair, the real batch of a GAN."""
        return 2 * batch if self.family == "swap" else batch


_ADAM = dict(name="adam", learning_rate=1e-3, b1=0.9, b2=0.999, warmup_steps=0, grad_clip_norm=0.0)
_SWAP_OFF = dict(ema_decay=0.0, gan_power=0.0, true_face_power=0.0)

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
}
