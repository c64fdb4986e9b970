"""PyTorch twins of the zoo's benchmarked training steps: same layers, shapes, losses and optimisers, NCHW.

Our own code, written from the zoo modules it mirrors, for `benchmarks.compare_torch` only (a test
extra: nothing else imports torch). Each twin builds its nets from an entry of
`benchmarks.twin_specs.SPECS`, which `compare_torch.check_spec` asserts against the zoo config:

| twin       | JAX side: config (model)                         | batch       | optimiser                           | params                   |
|------------|--------------------------------------------------|-------------|-------------------------------------|--------------------------|
| vae_conv64 | train.config.base_config()'s VAE (vae_conv)      | 128         | Adam 1e-3                           | 8,563,811                |
| df64       | configs/swap_df_synthetic.py (swap_df)           | 16 A + 16 B | Adam 1e-3, 100 warm-up, clip norm 1 | 7,616,410                |
| df128      | configs/swap_df_grid.py:centre (swap_df)         | 8 A + 8 B   | AdaBelief 2e-4, 100 warm-up, clip 1 | 13,226,154               |
| dcgan64    | configs/dcgan_celeba64.py (dcgan_g, dcgan_d)     | 128         | Adam 2e-4, b1 0.5, one per net      | G 3,576,704, D 2,765,568 |

| twin       | model fields, input                                                    | step and loss                                     |
|------------|------------------------------------------------------------------------|---------------------------------------------------|
| vae_conv64 | latent 32, channels (32, 64), hidden 256, silu, bernoulli; 64x64x3     | binarise, eps ~ N(0, I), -ELBO (BCE + KL, beta 1) |
| df64       | res 64, opts ud, ae 128, e 24, d 24, mask 8; faces with both masks     | per side, unmasked: 10 DSSIM (window 5) + 10 MSE  |
|            |                                                                        |   + 10 mask MSE + 300 eyes/mouth L1               |
| df128      | res 128, opts ud, ae 128, e 32, d 32, mask 8; faces without masks      | per side, unmasked: 10 DSSIM (window 11) + 10 MSE |
|            |                                                                        |   + 0 x mask MSE                                  |
| dcgan64    | G: z 100, ngf 64; D: ndf 64, batch norm; 64x64x3                       | D step (real vs detached G(z)), then G step;      |
|            |                                                                        |   non-saturating, BN in train mode throughout     |

What differs from the JAX models, none of it changing shapes, parameter counts or MACs:
- Initialisers are torch's defaults; random numbers come from torch's generator, not JAX keys.
- Flattened features are NCHW-ordered (a permutation of the dense weights); transposed-conv
  kernels have torch's orientation (lax's is flipped); XLA's "SAME" padding of a 5x5 stride-2 conv
  on an even map is (1, 2), the twin pads (2, 2) as PyTorch code does, so borders shift by a pixel.
- The JAX steps also compute their logged metrics (loss terms, gradient norm); the twins compute
  only what the update needs (the clip's norm included), which can only favour PyTorch.
- The JAX GAN step discards the batch-norm statistics that G's forward in the D step and D's in
  the G step produce; torch's train mode updates them (a few vector ops).
- Only the configurations benchmarked have a training step: bernoulli VAE likelihood, the
  non-saturating GAN loss, dcgan_d with norm "batch" or "none", swap_df without GAN/true-face/EMA.

FLOPs (`FLOP_CONVENTION`): the MACs of every Conv2d, ConvTranspose2d and Linear call of a forward
pass, read from shapes by forward hooks; a forward pass costs 2 x MACs, one with the input gradient
4 x, one with input and weight gradients 6 x (the first layer's unneeded input gradient included).
SSIM filters, norms, activations and optimisers are not counted.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.twin_specs import SPECS, Spec

FLOP_CONVENTION = ("conv/dense MACs from shapes; forward = 2 x MACs, forward + input gradient = 4 x, "
                   "forward + input and weight gradients = 6 x; SSIM filters, norms, activations, optimiser not counted")
# Forward-pass multiples per net and step: VAE and swap train one net; DCGAN's D step runs G forward and
# D forward-backward on the real and the fake batch, its G step G forward-backward and D forward + input grad.
PASSES: dict[str, dict[str, int]] = {"vae": {"vae": 3}, "swap": {"swap": 3}, "gan": {"G": 1 + 3, "D": 3 + 3 + 2}}
_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh, "relu": F.relu, "silu": F.silu, "elu": F.elu, "leaky_relu": F.leaky_relu}


def _act(x: Tensor, kind: str, alpha: float) -> Tensor:
    """LeakyReLU(alpha), or DFL's x*cos(x) for "xcos": zoo.swap.activate."""
    return F.leaky_relu(x, alpha, inplace=True) if kind == "leaky_relu" else x * torch.cos(x)


class ConvVAE(nn.Module):
    """zoo.vae.ConvVAE: 4x4 stride-2 convs down, dense bottleneck, 4x4 stride-2 transposed convs up, 3x3 head."""

    def __init__(self, image: tuple[int, int, int], latent_dim: int, channels: Iterable[int], hidden: int,
                 activation: str, likelihood: str) -> None:
        super().__init__()
        height, width, colors = image
        channels = tuple(channels)
        factor = 2 ** len(channels)
        self.act = _ACTIVATIONS[activation]
        self.map = (channels[-1], height // factor, width // factor)
        flat = math.prod(self.map)
        self.down = nn.ModuleList(nn.Conv2d(i, o, 4, 2, 1) for i, o in zip((colors,) + channels, channels))
        self.enc_hidden, self.posterior = nn.Linear(flat, hidden), nn.Linear(hidden, 2 * latent_dim)
        self.dec_hidden, self.bottom = nn.Linear(latent_dim, hidden), nn.Linear(hidden, flat)
        ups = tuple(reversed(channels))
        self.up = nn.ModuleList(nn.ConvTranspose2d(i, o, 4, 2, 1) for i, o in zip((channels[-1],) + ups, ups))
        self.head = nn.Conv2d(channels[0], colors * (1 if likelihood == "bernoulli" else 2), 3, 1, 1)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images [B, C, H, W] to the posterior's mean and log-variance."""
        for conv in self.down:
            x = self.act(conv(x))
        mean, logvar = self.posterior(self.act(self.enc_hidden(x.flatten(1)))).chunk(2, -1)
        return mean, logvar

    def decode(self, z: Tensor) -> Tensor:
        """Latents to the decoder's raw output [B, C * outputs, H, W]."""
        h = self.act(self.bottom(self.act(self.dec_hidden(z)))).view(-1, *self.map)
        for conv in self.up:
            h = self.act(conv(h))
        return self.head(h)

    def forward(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(decoder output, mean, logvar) of the reparameterised pass."""
        mean, logvar = self.encode(x)
        return self.decode(mean + torch.exp(0.5 * logvar) * eps), mean, logvar


class _Down(nn.Module):
    """zoo.swap._Downscale: 5x5 stride-2 conv, LeakyReLU 0.1 (or x*cos x)."""

    def __init__(self, cin: int, cout: int, act: str) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(cin, cout, 5, 2, 2), act

    def forward(self, x: Tensor) -> Tensor:
        return _act(self.conv(x), self.act, 0.1)


class _Up(nn.Module):
    """zoo.swap._Upscale: 3x3 conv to 4*cout, LeakyReLU 0.1 (or x*cos x), pixel shuffle by 2."""

    def __init__(self, cin: int, cout: int, act: str) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(cin, 4 * cout, 3, 1, 1), act

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(_act(self.conv(x), self.act, 0.1), 2)


class _Res(nn.Module):
    """zoo.swap._ResidualBlock: conv3x3, act 0.2, conv3x3, add the input, act 0.2."""

    def __init__(self, ch: int, act: str) -> None:
        super().__init__()
        self.conv1, self.conv2, self.act = nn.Conv2d(ch, ch, 3, 1, 1), nn.Conv2d(ch, ch, 3, 1, 1), act

    def forward(self, x: Tensor) -> Tensor:
        return _act(self.conv2(_act(self.conv1(x), self.act, 0.2)) + x, self.act, 0.2)


class _Inter(nn.Module):
    """zoo.swap._Inter: dense to ae_dims, dense to a lowest^2 x out_ch map, optional upscale."""

    def __init__(self, flat: int, ae_dims: int, out_ch: int, lowest: int, upscale: bool, act: str) -> None:
        super().__init__()
        self.dense1, self.dense2 = nn.Linear(flat, ae_dims), nn.Linear(ae_dims, lowest * lowest * out_ch)
        self.map = (out_ch, lowest, lowest)
        self.up = _Up(out_ch, out_ch, act) if upscale else nn.Identity()

    def forward(self, z: Tensor) -> Tensor:
        return self.up(self.dense2(self.dense1(z)).view(-1, *self.map))


class _Decoder(nn.Module):
    """zoo.swap._Decoder: upscale+residual stages to a 1x1 RGB head, a narrower upscale-only mask branch."""

    def __init__(self, cin: int, d_dims: int, d_mask_dims: int, opts: str) -> None:
        super().__init__()
        act = "xcos" if "c" in opts else "leaky_relu"
        mults = (8, 8, 4, 2) if "t" in opts else (8, 4, 2)
        self.double = "d" in opts
        widths = [d_dims * m for m in mults]
        self.body = nn.Sequential(*(m for i, o in zip([cin] + widths, widths) for m in (_Up(i, o, act), _Res(o, act))))
        self.rgb = nn.Conv2d(widths[-1], 3 * (4 if self.double else 1), 1)
        masks = [d_mask_dims * m for m in mults + ((1,) if self.double else ())]
        self.mask_body = nn.Sequential(*(_Up(i, o, act) for i, o in zip([cin] + masks, masks)))
        self.mask = nn.Conv2d(masks[-1], 1, 1)

    def forward(self, code: Tensor) -> tuple[Tensor, Tensor]:
        rgb = self.rgb(self.body(code))
        rgb = F.pixel_shuffle(rgb, 2) if self.double else rgb
        return torch.sigmoid(rgb), torch.sigmoid(self.mask(self.mask_body(code)))


class DF(nn.Module):
    """zoo.swap.DF (DFL SAEHD "df"): shared encoder and inter, decoder_src for A, decoder_dst for B."""

    def __init__(self, resolution: int, opts: str, ae_dims: int, e_dims: int, d_dims: int, d_mask_dims: int) -> None:
        super().__init__()
        if set(opts) - set("udtc"):
            raise ValueError(f"opts {opts!r}: use the letters of 'udtc'")
        act = "xcos" if "c" in opts else "leaky_relu"
        deep = "t" in opts
        mults = (1, 2, 4, 8, 8) if deep else (1, 2, 4, 8)
        widths = [e_dims * m for m in mults]
        down: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip([3] + widths, widths)):
            down.append(_Down(cin, cout, act))
            if deep and i in (0, len(widths) - 1):
                down.append(_Res(cout, act))
        self.encoder = nn.Sequential(*down)
        self.pixel_norm = "u" in opts
        flat = (resolution >> len(mults)) ** 2 * widths[-1]
        lowest = resolution // (32 if "d" in opts else 16)
        self.inter = _Inter(flat, ae_dims, ae_dims, lowest, not deep, act)
        self.decoder_src = _Decoder(ae_dims, d_dims, d_mask_dims, opts)
        self.decoder_dst = _Decoder(ae_dims, d_dims, d_mask_dims, opts)

    def encode(self, x: Tensor) -> Tensor:
        """Images to flat codes, pixel-normalised with `u`."""
        h = self.encoder(x).flatten(1)
        return h * torch.rsqrt(h.square().mean(-1, keepdim=True) + 1e-6) if self.pixel_norm else h

    def forward(self, x_src: Tensor, x_dst: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """{"src": (rgb, mask), "dst": (rgb, mask)}, each side through its own decoder."""
        return {"src": self.decoder_src(self.inter(self.encode(x_src))),
                "dst": self.decoder_dst(self.inter(self.encode(x_dst)))}


class DCGANGenerator(nn.Module):
    """zoo.gan.DCGANGenerator: bias-free dense to 4x4, BN+ReLU, 4x4 stride-2 transposed convs with BN+ReLU, tanh."""

    def __init__(self, image: tuple[int, int, int], latent_dim: int, ngf: int) -> None:
        super().__init__()
        size, _, colors = image
        n = size.bit_length() - 3
        widths = [ngf * 2 ** (n - 1 - i) for i in range(n)]
        self.map = (widths[0], 4, 4)
        self.project = nn.Linear(latent_dim, 16 * widths[0], bias=False)
        self.project_bn = nn.BatchNorm2d(widths[0], eps=1e-5, momentum=0.1)
        ups: list[nn.Module] = []
        for cin, cout in zip(widths, widths[1:]):
            ups += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1),
                    nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*ups, nn.ConvTranspose2d(widths[-1], colors, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: Tensor) -> Tensor:
        return self.body(F.relu(self.project_bn(self.project(z).view(-1, *self.map))))


class DCGANDiscriminator(nn.Module):
    """zoo.gan.DCGANDiscriminator: 4x4 stride-2 convs (BN after all but the first), LeakyReLU 0.2, 4x4 VALID logit."""

    def __init__(self, image: tuple[int, int, int], ndf: int, norm: str) -> None:
        super().__init__()
        if norm not in ("batch", "none"):
            raise NotImplementedError(f"dcgan_d norm {norm!r} has no twin; 'batch' and 'none' do")
        size, _, colors = image
        bias = norm == "none"
        layers: list[nn.Module] = []
        cin = colors
        for i in range(size.bit_length() - 3):
            layers.append(nn.Conv2d(cin, ndf * 2**i, 4, 2, 1, bias=bias))
            if i > 0 and norm == "batch":
                layers.append(nn.BatchNorm2d(ndf * 2**i, eps=1e-5, momentum=0.1))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            cin = ndf * 2**i
        self.body = nn.Sequential(*layers, nn.Conv2d(cin, 1, 4, 1, 0, bias=bias))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).flatten()


class AdaBelief(torch.optim.Optimizer):
    """optax.adabelief's update (bias-corrected, eps 1e-16 in and outside the root) in foreach ops: torch has none."""

    def __init__(self, params: Iterable[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-16, eps_root: float = 1e-16) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, eps_root=eps_root, count=0))

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        """One update of every parameter that has a gradient."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if not self.state[p]:
                    self.state[p].update(mu=torch.zeros_like(p), nu=torch.zeros_like(p))
            grads = [p.grad for p in params]
            mu, nu = [self.state[p]["mu"] for p in params], [self.state[p]["nu"] for p in params]
            (b1, b2), group["count"] = group["betas"], group["count"] + 1
            torch._foreach_lerp_(mu, grads, 1 - b1)
            err = torch._foreach_sub(grads, mu)
            torch._foreach_mul_(err, err)
            torch._foreach_mul_(nu, b2)
            torch._foreach_add_(nu, err, alpha=1 - b2)
            torch._foreach_add_(nu, group["eps_root"])
            denom = torch._foreach_div(nu, 1 - b2 ** group["count"])
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_addcdiv_(params, mu, denom, value=-group["lr"] / (1 - b1 ** group["count"]))


def optimizer(optim: dict[str, Any], params: Iterable[Tensor]) -> torch.optim.Optimizer:
    """The spec's optimiser: torch's fused Adam (its fastest), or our AdaBelief."""
    betas = (optim["b1"], optim["b2"])
    if optim["name"] == "adam":
        return torch.optim.Adam(params, lr=optim["learning_rate"], betas=betas, fused=True)
    if optim["name"] == "adabelief":
        return AdaBelief(params, optim["learning_rate"], betas)
    raise NotImplementedError(f"optimiser {optim['name']!r} has no twin")


def gaussian(size: int, sigma: float) -> Tensor:
    """train.losses.gaussian_kernel: a normalised 1-D Gaussian of `size` taps."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).float()


def _separable(x: Tensor, kernel: Tensor) -> Tensor:
    """Depthwise VALID filtering of [B, C, H, W] with the outer product of a 1-D kernel."""
    c, n = x.shape[1], kernel.numel()
    x = F.conv2d(x, kernel.view(1, 1, n, 1).expand(c, 1, n, 1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, 1, n).expand(c, 1, 1, n), groups=c)


def dssim(x: Tensor, y: Tensor, kernel: Tensor) -> Tensor:
    """train.losses.dssim per example: (1 - SSIM) / 2, Gaussian window (sigma 1.5) VALID, k1 0.01, k2 0.03."""
    stats = _separable(torch.cat([x, y, x * x, y * y, x * y], 1), kernel)
    mu_x, mu_y, xx, yy, xy = stats.chunk(5, 1)
    c1, c2 = 0.01**2, 0.03**2
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    structure = (2 * (xy - mu_x * mu_y) + c2) / (xx - mu_x**2 + yy - mu_y**2 + c2)
    return (1 - (luminance * structure).mean((1, 2, 3))) / 2


def dssim_windows(resolution: int) -> tuple[tuple[int, float], ...]:
    """train.families.swap.dssim_windows: one window below 256 px, two from 256 px up."""
    if resolution < 256:
        return ((max(1, int(resolution / 11.6)), 1.0),)
    return ((int(resolution / 11.6), 0.5), (int(resolution / 23.2), 0.5))


def soften_mask(mask: Tensor, resolution: int) -> Tensor:
    """train.losses.soften_mask: blur (radius res // 32, edges replicated), clip to [0, 0.5], double."""
    r = max(1, resolution // 32)
    return _separable(F.pad(mask, (r, r, r, r), mode="replicate"), gaussian(2 * r + 1, r / 2)).clamp(0, 0.5) * 2


class Twin:
    """A spec's training step in PyTorch: nets, optimisers, synthetic batches, and `step` = one update.

    `LOSSES` names the methods that run forward and loss; with compile=True each is wrapped in
    torch.compile (forward and backward compiled, optimisers eager) and called without the underscore.
    """

    LOSSES: tuple[str, ...] = ()

    def __init__(self, spec: Spec, channels_last: bool = False, compile: bool = False) -> None:
        self.spec = spec
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.nets = {k: v.to(memory_format=self.fmt) for k, v in self.build().items()}
        self.opts = {k: optimizer(spec.optim, v.parameters()) for k, v in self.nets.items()}
        self.count = 0
        for name in self.LOSSES:
            fn = getattr(self, name)
            setattr(self, name.lstrip("_"), torch.compile(fn) if compile else fn)

    def build(self) -> dict[str, nn.Module]:
        """The nets, named as the JAX family's state["params"]."""
        raise NotImplementedError

    def batch(self, size: int | None = None) -> dict[str, Any]:
        """A synthetic batch as the family's step receives it, NCHW in this twin's memory format."""
        raise NotImplementedError

    def inputs(self, batch: dict[str, Any]) -> dict[str, tuple[Tensor, ...]]:
        """Arguments of one forward call of each net on `batch` (what tests and FLOP counts run)."""
        raise NotImplementedError

    def step(self, batch: dict[str, Any]) -> None:
        """One training step on `batch`."""
        raise NotImplementedError

    def _images(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        """Random uint8 pixels or [0, 1) floats of `shape` in the twin's memory format."""
        x = torch.randint(0, 256, shape, dtype=dtype) if dtype == torch.uint8 else torch.rand(shape, dtype=dtype)
        return x.contiguous(memory_format=self.fmt)

    def _update(self, net: str) -> None:
        """train.optim.make's chain on the gradients in .grad: warm-up LR, global-norm clip, optimiser step."""
        optim, opt = self.spec.optim, self.opts[net]
        if optim["warmup_steps"]:
            for group in opt.param_groups:
                group["lr"] = optim["learning_rate"] * min(1.0, self.count / optim["warmup_steps"])
        if optim["grad_clip_norm"]:
            nn.utils.clip_grad_norm_(self.nets[net].parameters(), optim["grad_clip_norm"], foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)


class VAETwin(Twin):
    """vae_conv's negative-ELBO step: dynamic binarisation, reparameterisation, Bernoulli likelihood."""

    LOSSES = ("_loss",)

    def __init__(self, spec: Spec, channels_last: bool = False, compile: bool = False) -> None:
        if spec.fields["likelihood"] != "bernoulli" or spec.hparams["kl_warmup_steps"]:
            raise NotImplementedError("the VAE twin trains the bernoulli likelihood without KL warm-up only")
        super().__init__(spec, channels_last, compile)

    def build(self) -> dict[str, nn.Module]:
        return {"vae": ConvVAE(self.spec.image, **self.spec.fields)}

    def batch(self, size: int | None = None) -> dict[str, Any]:
        h, w, c = self.spec.image
        return {"image": self._images((size or self.spec.batch, c, h, w), torch.uint8)}

    def inputs(self, batch: dict[str, Any]) -> dict[str, tuple[Tensor, ...]]:
        x = batch["image"].float() / 255.0
        return {"vae": (x, torch.randn(x.shape[0], self.spec.fields["latent_dim"]))}

    def _loss(self, pixels: Tensor) -> Tensor:
        x = torch.bernoulli(pixels.float() / 255.0)
        out, mean, logvar = self.nets["vae"](x, torch.randn(x.shape[0], self.spec.fields["latent_dim"]))
        log_px = -F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(-1)
        return (self.spec.hparams["beta"] * kl - log_px).mean()

    def step(self, batch: dict[str, Any]) -> None:
        self.loss(batch["image"]).backward()
        self._update("vae")
        self.count += 1


class SwapTwin(Twin):
    """swap_df's autoencoder step: both sides reconstructed, SAEHD's side loss summed over A and B."""

    LOSSES = ("_loss",)

    def __init__(self, spec: Spec, channels_last: bool = False, compile: bool = False) -> None:
        if spec.model != "swap_df" or any(spec.hparams[k] for k in ("ema_decay", "gan_power", "true_face_power")):
            raise NotImplementedError("the swap twin is swap_df's autoencoder step without EMA or adversaries")
        super().__init__(spec, channels_last, compile)
        self.windows = [(gaussian(w, 1.5), share) for w, share in dssim_windows(spec.fields["resolution"])]

    def build(self) -> dict[str, nn.Module]:
        return {"swap": DF(**self.spec.fields)}

    def batch(self, size: int | None = None) -> dict[str, Any]:
        b, (h, w, c) = size or self.spec.batch, self.spec.image

        def side() -> dict[str, Tensor]:
            masks = {k: (self._images((b, 1, h, w)) > 0.5).float() for k in ("mask", "em_mask")}
            return {"input": self._images((b, c, h, w)), "target": self._images((b, c, h, w))} | (
                masks if self.spec.masks else {})

        return {"a": side(), "b": side()}

    def inputs(self, batch: dict[str, Any]) -> dict[str, tuple[Tensor, ...]]:
        return {"swap": (batch["a"]["input"], batch["b"]["input"])}

    def _side(self, rgb: Tensor, pred_mask: Tensor, side: dict[str, Tensor]) -> Tensor:
        """train.families.swap.side_loss, averaged over the batch."""
        hp, res = self.spec.hparams, self.spec.fields["resolution"]
        target, mask = side["target"], side.get("mask")
        t, p = target, rgb
        if hp["masked_training"] and mask is not None:
            soft = soften_mask(mask, res)
            t, p = target * soft, rgb * soft
        structural = sum(share * dssim(t, p, kernel) for kernel, share in self.windows)
        mse = (t - p).square().mean((1, 2, 3))
        mask_mse = ((1.0 if mask is None else mask) - pred_mask).square().mean((1, 2, 3))
        total = hp["dssim_weight"] * structural + hp["mse_weight"] * mse + hp["mask_weight"] * mask_mse
        if hp["eyes_mouth_prio"]:
            em = side["em_mask"]
            total = total + hp["eyes_mouth_weight"] * (target * em - rgb * em).abs().mean((1, 2, 3))
        return total.mean()

    def _loss(self, a: dict[str, Tensor], b: dict[str, Tensor]) -> Tensor:
        out = self.nets["swap"](a["input"], b["input"])
        return self._side(*out["src"], a) + self._side(*out["dst"], b)

    def step(self, batch: dict[str, Any]) -> None:
        self.loss(batch["a"], batch["b"]).backward()
        self._update("swap")
        self.count += 1


class GANTwin(Twin):
    """DCGAN's trainer step: the D step (real vs detached G(z)), then the G step through D, non-saturating."""

    LOSSES = ("_d_loss", "_g_loss")

    def __init__(self, spec: Spec, channels_last: bool = False, compile: bool = False) -> None:
        hp = spec.hparams
        if (hp["loss"] != "non_saturating" or hp["n_critic"] != 1 or hp["r1_gamma"] or hp["ema_half_life_images"]
                or hp["diffaugment"] or hp["d_learning_rate"]):
            raise NotImplementedError("the GAN twin is the plain non-saturating D-then-G step")
        super().__init__(spec, channels_last, compile)
        self.latent = spec.fields["latent_dim"]

    def build(self) -> dict[str, nn.Module]:
        disc = {k: v for k, v in self.spec.disc.items() if k != "name"}
        return {"G": DCGANGenerator(self.spec.image, **self.spec.fields), "D": DCGANDiscriminator(self.spec.image, **disc)}

    def batch(self, size: int | None = None) -> dict[str, Any]:
        h, w, c = self.spec.image
        return {"image": self._images((size or self.spec.batch, c, h, w), torch.uint8)}

    def inputs(self, batch: dict[str, Any]) -> dict[str, tuple[Tensor, ...]]:
        real = batch["image"].float() / 127.5 - 1.0
        return {"G": (torch.randn(real.shape[0], self.spec.fields["latent_dim"]),), "D": (real,)}

    def _d_loss(self, pixels: Tensor) -> Tensor:
        real = pixels.float() / 127.5 - 1.0
        with torch.no_grad():
            fake = self.nets["G"](torch.randn(real.shape[0], self.latent))
        r, f = self.nets["D"](real), self.nets["D"](fake)
        return (F.softplus(-r) + F.softplus(f)).mean()

    def _g_loss(self, batch_size: int) -> Tensor:
        return F.softplus(-self.nets["D"](self.nets["G"](torch.randn(batch_size, self.latent)))).mean()

    def step(self, batch: dict[str, Any]) -> None:
        self.d_loss(batch["image"]).backward()
        self._update("D")
        params = list(self.nets["G"].parameters())
        for p, g in zip(params, torch.autograd.grad(self.g_loss(batch["image"].shape[0]), params)):
            p.grad = g
        self._update("G")
        self.count += 1


_TWINS: dict[str, type[Twin]] = {"vae": VAETwin, "swap": SwapTwin, "gan": GANTwin}


def make(name: str | Spec, channels_last: bool = False, compile: bool = False) -> Twin:
    """The twin of SPECS[name], or of a Spec given directly."""
    spec = SPECS[name] if isinstance(name, str) else name
    return _TWINS[spec.family](spec, channels_last, compile)


def param_counts(name: str) -> dict[str, int]:
    """Parameters of each net of the twin, named as the JAX family's state["params"]."""
    return {k: sum(p.numel() for p in net.parameters()) for k, net in make(name).nets.items()}


def forward_macs(net: nn.Module, *inputs: Tensor) -> int:
    """MACs of the Conv2d, ConvTranspose2d and Linear calls of one forward pass, from their shapes."""
    total = 0

    def hook(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.ConvTranspose2d):
            total += args[0].numel() * module.out_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, nn.Conv2d):
            total += out.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        else:
            total += out.numel() * module.in_features

    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, layers)]
    training = net.training
    try:
        with torch.no_grad():
            net.eval()(*inputs)
    finally:
        net.train(training)
        for handle in handles:
            handle.remove()
    return total


def step_flops(name: str, batch: int = 0) -> dict[str, Any]:
    """Analytic FLOPs of one training step of SPECS[name] at its batch size (or `batch`), by `FLOP_CONVENTION`."""
    spec, twin = SPECS[name], make(name)
    inputs = twin.inputs(twin.batch(1))
    macs = {k: forward_macs(net, *inputs[k]) for k, net in twin.nets.items()}
    flops = (batch or spec.batch) * sum(2 * macs[k] * n for k, n in PASSES[spec.family].items())
    return {"convention": FLOP_CONVENTION, "forward_macs_per_example": macs,
            "example": "an A/B pair" if spec.family == "swap" else "an image", "forward_passes": PASSES[spec.family],
            "flops_per_step": flops, "gflop_per_step": round(flops / 1e9, 3)}
