"""PyTorch twins of the zoo's benchmarked training steps: same layers, shapes, losses and optimisers, NCHW.

Our own code, written from the zoo modules it mirrors, for `benchmarks.compare_torch` only (a test
extra: nothing else imports torch). Each twin builds its nets from an entry of
`benchmarks.twin_specs.SPECS`, which `compare_torch.check_spec` asserts against the zoo config:

| twin          | JAX side: config (model)                         | batch       | optimiser                           | params                     |
|---------------|--------------------------------------------------|-------------|-------------------------------------|----------------------------|
| vae_conv64    | train.config.base_config()'s VAE (vae_conv)      | 128         | Adam 1e-3                           | 8,563,811                  |
| df64          | configs/swap_df_synthetic.py (swap_df)           | 16 A + 16 B | Adam 1e-3, 100 warm-up, clip norm 1 | 7,616,410                  |
| df128         | configs/swap_df_grid.py:centre (swap_df)         | 8 A + 8 B   | AdaBelief 2e-4, 100 warm-up, clip 1 | 13,226,154                 |
| dcgan64       | configs/dcgan_celeba64.py (dcgan_g, dcgan_d)     | 128         | Adam 2e-4, b1 0.5, one per net      | G 3,576,704, D 2,765,568   |
| stylegan2_64  | configs/stylegan2_synthetic_faces.py, ADA off    | 32          | Adam 0.0025 (0, 0.99), lazy-scaled  | G 275,144, D 296,401       |
|               |   (stylegan2_g, stylegan2_d)                     |             |   per net: D x 16/17, G x 4/5       |                            |
| stylegan2_256 | configs/stylegan2_ffhq256.py (paper256)          | 64          | the same                            | G 24,767,458, D 24,001,089 |
| fomm64        | configs/reenact_fomm_synthetic.py (fomm)         | 16 pairs    | Adam 2e-4, b1 0.5                   | 720,871                    |
| fomm256       | configs/reenact_fomm_vox256.py, no VGG19 (fomm)  | 40 pairs    | the same                            | 59,790,759                 |

| twin          | model fields, input                                                    | step and loss                                     |
|---------------|------------------------------------------------------------------------|---------------------------------------------------|
| vae_conv64    | latent 32, channels (32, 64), hidden 256, silu, bernoulli; 64x64x3     | binarise, eps ~ N(0, I), -ELBO (BCE + KL, beta 1) |
| df64          | res 64, opts ud, ae 128, e 24, d 24, mask 8; faces with both masks     | per side, unmasked: 10 DSSIM (window 5) + 10 MSE  |
|               |                                                                        |   + 10 mask MSE + 300 eyes/mouth L1               |
| df128         | res 128, opts ud, ae 128, e 32, d 32, mask 8; faces without masks      | per side, unmasked: 10 DSSIM (window 11) + 10 MSE |
|               |                                                                        |   + 0 x mask MSE                                  |
| dcgan64       | G: z 100, ngf 64; D: ndf 64, batch norm; 64x64x3                       | D step (real vs detached G(z)), then G step;      |
|               |                                                                        |   non-saturating, BN in train mode throughout     |
| stylegan2_64  | z = w 64, 2 mapping layers, channel_base 1024, max 64; D mbstd 4;      | D, R1 every 16 (gamma 0.0256), G (mixing 0.9,     |
|               |   64x64x3, x-flipped reals                                             |   EMA), path length every 4 on half the batch     |
| stylegan2_256 | z = w 512, 8 mapping layers, channel_base 16384, max 512, clamp 256;   | the same, R1 gamma 1; the twin computes in        |
|               |   D mbstd 8; 256x256x3 (FLOP count and GPU benchmark only)             |   float32 where the zoo has bf16 top resolutions  |
| fomm64        | CPU preset: 10 keypoints + Jacobians, kp/dm hourglasses 16..256 of 3   | kp(S), kp(D), dense motion, generator, kp(T D);   |
|               |   blocks at 1/4 scale, generator 16..128, 2 down, 2 ResBlocks,         |   10 (L1 + DSSIM) over the 1, 1/2, 1/4, 1/8       |
|               |   batch norm; (source, driving) uint8 pairs, 64x64x3                   |   pyramid, 10 equivariance value, 10 Jacobian     |
| fomm256       | FOMM's vox-256 networks (kp 32..1024 of 5 blocks, dm 64..1024 of 5,    | the same with the config's VGG19 pyramid replaced |
|               |   generator 64..512, 6 ResBlocks); 256x256x3 (FLOPs and GPU only)      |   by L1 + DSSIM (no VGG19 file on the device)     |

StyleGAN2's twin (`StyleGAN2Twin`) runs the GAN family's schedule: each `step` is one trainer step
(D and G always, lazy R1 when count % 16 == 0, path length when count % 4 == 0), so the timed
window of 16 steps (`Spec.cycle`, from a multiple of 16) holds one R1 and four path-length
updates on both sides. The JAX config trains with ADA (target 0.6); the spec's `overrides` switch
it off for both sides (the twin has no ADA pipeline), so what is compared is StyleGAN2 without
augmentation, with x-flips (`gan.mirror`) on both. Its layers are functional (F.conv2d,
F.conv_transpose2d, F.linear through small counting wrappers) because modulation scales
activations per example; `forward_macs` counts those calls as hooks count modules.

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
  non-saturating GAN loss, dcgan_d with norm "batch" or "none", swap_df without GAN/true-face/EMA,
  unconditional StyleGAN2 without ADA or DiffAugment.
- StyleGAN2: noise, mixing cutoffs and x-flips are drawn per example from torch's generator (the zoo's
  from per-example JAX keys); `num_bf16_res` is ignored (float32 throughout); D's epilogue FC reads
  NCHW-flattened features.

FOMM's twin (`FOMMTwin`, `FOMM`) is written from zoo/reenact.py, zoo/warp.py and
train/families/reenact.py, not from FOMM's repository: its random warp T is drawn from torch's
generator (the zoo keys one per example), the warp's Jacobian is in closed form (the zoo's by
`jax.jacfwd`), sampling is `F.grid_sample(..., align_corners=True)` (zeros in the models,
reflection for T D) as `zoo.warp.grid_sample`, the anti-aliasing blur a strided depthwise conv
(the zoo's a matrix product); the learning-rate milestones (60% and 90% of total_steps) are not
applied, as no benchmark reaches them. A test puts the twin's weights into the zoo's model and
compares the training pass, the keypoints and Jacobians, and the loss.

FLOPs (`FLOP_CONVENTION`): the MACs of every Conv2d, ConvTranspose2d and Linear call of a forward
pass (and of the functional conv/linear calls of StyleGAN2's twin, its demodulation's
[B, I] x [I, O] product included), read from shapes; a forward pass costs 2 x MACs, one with the
input gradient 4 x, one with input and weight gradients 6 x (the first layer's unneeded input
gradient included), a double backward (R1, path length) 12 x. FOMM's forward is the whole training
pass per (source, driving) pair (three keypoint-detector calls, dense motion, generator), 6 x.
SSIM filters, StyleGAN2's depthwise [1, 3, 3, 1] FIR resampling filters, FOMM's anti-aliasing blurs,
grid sampling, heatmap and flow sums, norms, activations and optimisers are not counted; tests
check the StyleGAN2 counts against the convs and products of the zoo models' traced forward, and
FOMM's against the convs of the family's traced training pass.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.twin_specs import SPECS, Spec

FLOP_CONVENTION = ("conv/dense MACs from shapes; forward = 2 x MACs, forward + input gradient = 4 x, "
                   "forward + input and weight gradients = 6 x, double backward (R1, path length) = 12 x; "
                   "SSIM, FIR resampling and anti-aliasing filters, grid sampling, norms, activations, "
                   "optimiser not counted")
# Forward-pass multiples per net and step: VAE and swap train one net; DCGAN's D step runs G forward and
# D forward-backward on the real and the fake batch, its G step G forward-backward and D forward + input grad.
PASSES: dict[str, dict[str, int]] = {"vae": {"vae": 3}, "swap": {"swap": 3}, "gan": {"G": 1 + 3, "D": 3 + 3 + 2},
                                      "reenact": {"reenactor": 3}}
_EXAMPLES = {"swap": "an A/B pair", "reenact": "a (source, driving) pair"}
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


_SQRT2, _SQRT_HALF = math.sqrt(2.0), math.sqrt(0.5)


class _MacCount:
    """MACs of the functional convs and products below while `forward_macs` counts (None: not counting)."""

    total: int | None = None


def _count(macs: int) -> None:
    if _MacCount.total is not None:
        _MacCount.total += macs


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear (weight [out, in]), counted: rows x in x out."""
    _count(x.numel() // x.shape[-1] * weight.numel())
    return F.linear(x, weight, bias)


def _conv(x: Tensor, weight: Tensor, stride: int = 1, padding: int = 0) -> Tensor:
    """F.conv2d (weight [O, I, k, k]), counted: output positions x O x I x k x k."""
    out = F.conv2d(x, weight, stride=stride, padding=padding)
    _count(out.numel() * weight[0].numel())
    return out


def _conv_transpose(x: Tensor, weight: Tensor) -> Tensor:
    """F.conv_transpose2d with stride 2 (weight [I, O, k, k]), counted: input positions x I x O x k x k."""
    _count(x.numel() * weight[0].numel())
    return F.conv_transpose2d(x, weight, stride=2)


def fir_filter() -> Tensor:
    """zoo.resample.fir_filter: outer([1, 3, 3, 1], [1, 3, 3, 1]) normalised to unit sum."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: Tensor, f: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0),
              gain: float = 1.0) -> Tensor:
    """zoo.resample.upfirdn2d in NCHW: zero insertion, pad (x0, x1, y0, y1), depthwise true convolution, decimation."""
    b, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    x = F.pad(x, list(pad))
    kernel = (f.flip([0, 1]) * gain).to(x.dtype)
    return F.conv2d(x, kernel[None, None].expand(c, 1, *f.shape), stride=down, groups=c)


def _bias_act(x: Tensor, bias: Tensor | None, act: str, gain: float = 1.0, clamp: float = 0.0) -> Tensor:
    """zoo.stylegan2._bias_act: + bias, lrelu(0.2) * sqrt(2) or linear, * gain, clamp to +-clamp when > 0."""
    if bias is not None:
        x = x + bias[:, None, None] if x.ndim == 4 else x + bias
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2) * _SQRT2
    if gain != 1.0:
        x = x * gain
    return x.clamp(-clamp, clamp) if clamp > 0 else x


def channels_at(res: int, base: int, cmax: int) -> int:
    """zoo.stylegan2.channels_at: min(base // res, cmax), at least 1."""
    return max(1, min(base // res, cmax))


class _FC(nn.Module):
    """zoo.stylegan2.FullyConnected: weight N(0, 1) / lr_mul used as weight * lr_mul / sqrt(fan_in), bias * lr_mul."""

    def __init__(self, cin: int, cout: int, lr_mul: float = 1.0, bias_init: float = 0.0, act: str = "linear") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init)))
        self.scale, self.lr_mul, self.act = lr_mul / math.sqrt(cin), lr_mul, act

    def forward(self, x: Tensor) -> Tensor:
        return _bias_act(_linear(x, self.weight * self.scale), self.bias * self.lr_mul, self.act)


class _Mapping(nn.Module):
    """zoo.stylegan2.MappingNetwork: z normalised by its second moment, FC layers at lr_mul, `w_avg` buffer."""

    def __init__(self, z_dim: int, w_dim: int, layers: int, lr_mul: float) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(_FC(z_dim if i == 0 else w_dim, w_dim, lr_mul, act="lrelu") for i in range(layers))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor) -> Tensor:
        x = z * torch.rsqrt(z.square().mean(-1, keepdim=True) + 1e-8)
        for fc in self.fcs:
            x = fc(x)
        return x


class _SynthesisLayer(nn.Module):
    """zoo.stylegan2.SynthesisLayer: x * s, 3x3 conv (or transposed conv + FIR gain 4), * demod, noise, bias, lrelu."""

    def __init__(self, cin: int, cout: int, w_dim: int, res: int, up: bool, clamp: float) -> None:
        super().__init__()
        self.affine = _FC(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.res, self.up, self.clamp = res, up, clamp

    def forward(self, x: Tensor, w: Tensor, fir: Tensor) -> Tensor:
        styles = self.affine(w)
        demod = torch.rsqrt(_linear(styles.square(), self.weight.square().sum((2, 3))) + 1e-8)
        x = x * styles[:, :, None, None]
        if self.up:
            x = upfirdn2d(_conv_transpose(x, self.weight.transpose(0, 1)), fir, pad=(1, 1, 1, 1), gain=4.0)
        else:
            x = _conv(x, self.weight, padding=1)
        x = x * demod[:, :, None, None]
        noise = torch.randn(x.shape[0], 1, self.res, self.res, dtype=x.dtype, device=x.device)
        return _bias_act(x + noise * self.noise_strength, self.bias, "lrelu", clamp=self.clamp)


class _ToRGB(nn.Module):
    """zoo.stylegan2.ToRGB: styles / sqrt(fan_in), 1x1 conv without demodulation, bias, clamp."""

    def __init__(self, cin: int, channels: int, w_dim: int, clamp: float) -> None:
        super().__init__()
        self.affine = _FC(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(channels, cin, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.gain, self.clamp = 1 / math.sqrt(cin), clamp

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.gain
        return _bias_act(_conv(x * styles[:, :, None, None], self.weight), self.bias, "linear", clamp=self.clamp)


class _SynthesisBlock(nn.Module):
    """zoo.stylegan2.SynthesisBlock: the 4x4 constant (cin 0) or an upsampling layer, a layer, ToRGB, skip sum."""

    def __init__(self, cin: int, cout: int, w_dim: int, res: int, channels: int, clamp: float) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.randn(cout, 4, 4)) if cin == 0 else None
        self.conv0 = None if cin == 0 else _SynthesisLayer(cin, cout, w_dim, res, True, clamp)
        self.conv1 = _SynthesisLayer(cout, cout, w_dim, res, False, clamp)
        self.torgb = _ToRGB(cout, channels, w_dim, clamp)

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor, fir: Tensor) -> tuple[Tensor, Tensor]:
        if self.conv0 is None:
            x = self.conv1(self.const.expand(ws.shape[0], -1, -1, -1), ws[:, 0], fir)
            w_rgb = ws[:, 1]
        else:
            x = self.conv1(self.conv0(x, ws[:, 0], fir), ws[:, 1], fir)
            w_rgb = ws[:, 2]
        y = self.torgb(x, w_rgb)
        return x, y if img is None else upfirdn2d(img, fir, up=2, pad=(2, 1, 2, 1), gain=4.0) + y


class StyleGAN2Generator(nn.Module):
    """zoo.stylegan2.StyleGAN2Generator: mapping, then the skip synthesis from a learned 4x4 constant; NCHW images.

    Always float32: `num_bf16_res` is accepted and ignored (the GPU benchmark times the JAX side only).
    """

    def __init__(self, image: tuple[int, int, int], latent_dim: int, w_dim: int, num_classes: int, mapping_layers: int,
                 mapping_lr_mul: float, w_avg_beta: float, channel_base: int, channel_max: int, num_bf16_res: int,
                 conv_clamp: float) -> None:
        super().__init__()
        if num_classes:
            raise NotImplementedError("the StyleGAN2 twin is unconditional")
        res, _, colors = image
        log_res = int(math.log2(res))
        self.mapping = _Mapping(latent_dim, w_dim, mapping_layers, mapping_lr_mul)
        blocks, cin = [], 0
        for log_r in range(2, log_res + 1):
            cout = channels_at(2**log_r, channel_base, channel_max)
            blocks.append(_SynthesisBlock(cin, cout, w_dim, 2**log_r, colors, conv_clamp))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.register_buffer("fir", fir_filter(), persistent=False)
        self.num_ws, self.w_avg_beta, self.latent_dim = 2 * log_res - 2, w_avg_beta, latent_dim

    def ws(self, z: Tensor, mixing_prob: float = 0.0, update_w_avg: bool = False) -> Tensor:
        """StyleGAN2Generator.map_latents and .mix: [B, num_ws, w_dim], a second z's ws past a per-example cutoff."""
        w = self.mapping(z)
        if update_w_avg:
            with torch.no_grad():
                self.mapping.w_avg.lerp_(w.mean(0), 1.0 - self.w_avg_beta)
        ws = w[:, None].expand(-1, self.num_ws, -1)
        if mixing_prob > 0:
            b = z.shape[0]
            w2 = self.mapping(torch.randn_like(z))
            cut = torch.randint(1, self.num_ws, (b,), device=z.device)
            cut = torch.where(torch.rand(b, device=z.device) < mixing_prob, cut, self.num_ws)
            later = torch.arange(self.num_ws, device=z.device)[None, :] >= cut[:, None]
            ws = torch.where(later[:, :, None], w2[:, None], ws)
        return ws

    def synthesis(self, ws: Tensor) -> Tensor:
        """Images [B, C, R, R] from ws, random noise in every layer (training's noise mode)."""
        x = img = None
        for b, block in enumerate(self.blocks):
            start = max(2 * b - 1, 0)
            x, img = block(x, img, ws[:, start:start + 3], self.fir)
        return img

    def forward(self, z: Tensor, mixing_prob: float = 0.0, update_w_avg: bool = False) -> Tensor:
        return self.synthesis(self.ws(z, mixing_prob, update_w_avg))


class _DConv(nn.Module):
    """zoo.stylegan2.DConv: equalised-lr k x k conv, FIR then stride 2 when downsampling, bias, act, gain, clamp."""

    def __init__(self, cin: int, cout: int, k: int, down: bool = False, bias: bool = True, act: str = "lrelu",
                 gain: float = 1.0, clamp: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale, self.k, self.down, self.act, self.gain, self.clamp = 1 / math.sqrt(cin * k * k), k, down, act, gain, clamp

    def forward(self, x: Tensor, fir: Tensor) -> Tensor:
        w = self.weight * self.scale
        if self.down and self.k == 1:
            x = _conv(upfirdn2d(x, fir, down=2, pad=(1, 1, 1, 1)), w)
        elif self.down:
            p = self.k // 2 + 1
            x = _conv(upfirdn2d(x, fir, pad=(p, p, p, p)), w, stride=2)
        else:
            x = _conv(x, w, padding=self.k // 2)
        return _bias_act(x, self.bias, self.act, self.gain, self.clamp * self.gain)


class _DBlock(nn.Module):
    """zoo.stylegan2.DiscriminatorBlock: (fromRGB,) conv3x3, downsampling conv3x3 + bias-free 1x1 skip, sqrt(1/2)."""

    def __init__(self, colors: int, cin: int, cout: int, clamp: float) -> None:
        super().__init__()
        self.fromrgb = _DConv(colors, cin, 1, clamp=clamp) if colors else None
        self.skip = _DConv(cin, cout, 1, down=True, bias=False, act="linear", gain=_SQRT_HALF)
        self.conv0 = _DConv(cin, cin, 3, clamp=clamp)
        self.conv1 = _DConv(cin, cout, 3, down=True, gain=_SQRT_HALF, clamp=clamp)

    def forward(self, x: Tensor, fir: Tensor) -> Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(x, fir)
        return self.skip(x, fir) + self.conv1(self.conv0(x, fir), fir)


def minibatch_std(x: Tensor, group: int, channels: int) -> Tensor:
    """zoo.stylegan2._minibatch_std in NCHW: each group of `group` consecutive examples' feature stddev as channels."""
    b, c, h, w = x.shape
    g = min(group, b)
    if b % g:
        raise ValueError(f"minibatch stddev needs the batch ({b}) to be a multiple of the group ({g})")
    y = x.reshape(b // g, g, channels, c // channels, h, w)
    y = (y.var(dim=1, correction=0) + 1e-8).sqrt().mean((2, 3, 4))
    return torch.cat([x, y.repeat_interleave(g, 0)[:, :, None, None].expand(b, channels, h, w)], 1)


class StyleGAN2Discriminator(nn.Module):
    """zoo.stylegan2.StyleGAN2Discriminator: residual blocks R .. 8, then minibatch stddev, conv3x3, FC, FC -> [B].

    The epilogue's FC reads NCHW-flattened features (a permutation of the zoo's NHWC order).
    """

    def __init__(self, image: tuple[int, int, int], num_classes: int, channel_base: int, channel_max: int,
                 mbstd_group: int, mbstd_channels: int, mapping_layers: int, num_bf16_res: int, conv_clamp: float) -> None:
        super().__init__()
        if num_classes:
            raise NotImplementedError("the StyleGAN2 twin is unconditional")
        res, _, colors = image
        ch = [channels_at(2**i, channel_base, channel_max) for i in range(int(math.log2(res)) + 1)]
        self.blocks = nn.ModuleList(_DBlock(colors if i == len(ch) - 1 else 0, ch[i], ch[i - 1], conv_clamp)
                                    for i in range(len(ch) - 1, 2, -1))
        self.group, self.mbstd_channels = mbstd_group, mbstd_channels
        self.conv = _DConv(ch[2] + (mbstd_channels if mbstd_group else 0), ch[2], 3, clamp=conv_clamp)
        self.fc, self.out = _FC(16 * ch[2], ch[2], act="lrelu"), _FC(ch[2], 1)
        self.register_buffer("fir", fir_filter(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x, self.fir)
        if self.group:
            x = minibatch_std(x, self.group, self.mbstd_channels)
        return self.out(self.fc(self.conv(x, self.fir).flatten(1)))[:, 0]


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
        self.opts = {k: optimizer(self.net_optim(k), v.parameters()) for k, v in self.nets.items()}
        self.count = 0
        for name in self.LOSSES:
            fn = getattr(self, name)
            setattr(self, name.lstrip("_"), torch.compile(fn) if compile else fn)

    def build(self) -> dict[str, nn.Module]:
        """The nets, named as the JAX family's state["params"]."""
        raise NotImplementedError

    def net_optim(self, net: str) -> dict[str, Any]:
        """The optimiser fields of `net` (the spec's; StyleGAN2 rescales them per net for its lazy intervals)."""
        return self.spec.optim

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


class _GANTwinBase(Twin):
    """What the GAN twins share: uint8 NCHW image batches, the nets' example inputs, D's fields from the spec."""

    def batch(self, size: int | None = None) -> dict[str, Any]:
        h, w, c = self.spec.image
        return {"image": self._images((size or self.spec.batch, c, h, w), torch.uint8)}

    def inputs(self, batch: dict[str, Any]) -> dict[str, tuple[Tensor, ...]]:
        real = batch["image"].float() / 127.5 - 1.0
        return {"G": (torch.randn(real.shape[0], self.spec.fields["latent_dim"]),), "D": (real,)}

    def disc_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.spec.disc.items() if k != "name"}


class GANTwin(_GANTwinBase):
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
        return {"G": DCGANGenerator(self.spec.image, **self.spec.fields),
                "D": DCGANDiscriminator(self.spec.image, **self.disc_fields())}

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


class StyleGAN2Twin(_GANTwinBase):
    """StyleGAN2's trainer step: "D", lazy "D_r1", "G" with its EMA, lazy "G_pl", on the GAN family's schedule.

    `step` counts trainer steps and runs what is due as `train.trainer` does (R1 when count % r1_every
    == 0, path length when count % pl_every == 0), so any 16 consecutive steps from a multiple of 16
    hold one R1 and four path-length updates on both sides. D: softplus(-D(x)) + softplus(D(G(z)))
    with G(z) detached; R1: gamma / 2 * r1_every * |grad_x D(x)|^2 on the reals; G: softplus(-D(G(z)))
    with style mixing, w_avg tracking and the EMA (half-life ramped up); path length on every
    pl_batch_shrink-th example: pl_weight * pl_every * (|J^T y| - EMA mean)^2, y ~ N(0, I) / sqrt(HW).
    Each is a separate Adam update with lazy Adam's lr and betas (c / (c + 1)). Reals are x-flipped
    with probability 1/2 (`mirror`). compile settings compile the D and G losses; R1 and path length
    (double backward, which torch.compile's AOTAutograd does not support) stay eager.
    """

    LOSSES = ("_d_loss", "_g_loss")

    def __init__(self, spec: Spec, channels_last: bool = False, compile: bool = False) -> None:
        hp = spec.hparams
        if (hp["loss"] != "non_saturating" or hp["n_critic"] != 1 or hp["diffaugment"] or hp["d_learning_rate"]
                or hp["ada_target"] or hp["ada_p"] or not hp["r1_gamma"] or not hp["pl_weight"]):
            raise NotImplementedError("the StyleGAN2 twin is the non-saturating D, R1, G, path-length recipe without "
                                      "augmentation, n_critic 1")
        super().__init__(spec, channels_last, compile)
        self.ema = [p.detach().clone() for p in self.nets["G"].parameters()]
        self.pl_mean = torch.zeros(())

    def build(self) -> dict[str, nn.Module]:
        return {"G": StyleGAN2Generator(self.spec.image, **self.spec.fields),
                "D": StyleGAN2Discriminator(self.spec.image, **self.disc_fields())}

    def net_optim(self, net: str) -> dict[str, Any]:
        """train.families.gan.optimizers: lazy Adam's lr x c / (c + 1) and betas ** (c / (c + 1))."""
        hp, optim = self.spec.hparams, dict(self.spec.optim)
        every = hp["r1_every"] if net == "D" else hp["pl_every"]
        if hp["lazy_adam"]:
            ratio = every / (every + 1)
            optim.update(learning_rate=optim["learning_rate"] * ratio, b1=optim["b1"] ** ratio, b2=optim["b2"] ** ratio)
        return optim

    def _reals(self, pixels: Tensor) -> Tensor:
        x = pixels.float() / 127.5 - 1.0
        if self.spec.hparams["mirror"]:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x

    def _z(self, batch_size: int) -> Tensor:
        return torch.randn(batch_size, self.spec.fields["latent_dim"])

    def _d_loss(self, pixels: Tensor) -> Tensor:
        real = self._reals(pixels)
        with torch.no_grad():
            fake = self.nets["G"](self._z(real.shape[0]), self.spec.hparams["style_mixing"])
        r, f = self.nets["D"](real), self.nets["D"](fake)
        return (F.softplus(-r) + F.softplus(f)).mean()

    def _r1_loss(self, pixels: Tensor) -> Tensor:
        hp = self.spec.hparams
        real = self._reals(pixels).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.nets["D"](real).sum(), real, create_graph=True)
        return 0.5 * hp["r1_gamma"] * hp["r1_every"] * grad.square().sum((1, 2, 3)).mean()

    def _g_loss(self, batch_size: int) -> Tensor:
        fake = self.nets["G"](self._z(batch_size), self.spec.hparams["style_mixing"], update_w_avg=True)
        return F.softplus(-self.nets["D"](fake)).mean()

    def _pl_loss(self, batch_size: int) -> Tensor:
        hp, g = self.spec.hparams, self.nets["G"]
        ws = g.ws(self._z(batch_size // hp["pl_batch_shrink"]), hp["style_mixing"])
        images = g.synthesis(ws)
        y = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
        (grad,) = torch.autograd.grad((images * y).sum(), ws, create_graph=True)
        lengths = grad.square().sum(2).mean(1).sqrt()
        pl_mean = self.pl_mean + hp["pl_decay"] * (lengths.mean() - self.pl_mean)
        self.pl_mean = pl_mean.detach()
        return hp["pl_weight"] * hp["pl_every"] * (lengths - pl_mean).square().mean()

    def _descend(self, net: str, loss: Tensor) -> None:
        """One optimiser update of `net` on the gradients of `loss` with respect to its parameters only.

        A parameter the loss does not reach (D's output bias in R1) gets a zero gradient, as in JAX, so
        Adam still decays its second moment.
        """
        params = list(self.nets[net].parameters())
        for p, g in zip(params, torch.autograd.grad(loss, params, materialize_grads=True)):
            p.grad = g
        self._update(net)

    @torch.no_grad()
    def _update_ema(self, batch: int) -> None:
        """train.families.gan.ema_decay: beta = 0.5 ** (batch / half-life), half-life ramped up by images seen."""
        hp = self.spec.hparams
        half_life = hp["ema_half_life_images"]
        if hp["ema_rampup"]:
            half_life = max(min(half_life, self.count * batch * hp["ema_rampup"]), 1e-8)
        beta = 0.5 ** (batch / half_life)
        torch._foreach_lerp_(self.ema, list(self.nets["G"].parameters()), 1.0 - beta)

    def step(self, batch: dict[str, Any]) -> None:
        hp, pixels = self.spec.hparams, batch["image"]
        self._descend("D", self.d_loss(pixels))
        if self.count % hp["r1_every"] == 0:
            self._descend("D", self._r1_loss(pixels))
        self._descend("G", self.g_loss(pixels.shape[0]))
        self._update_ema(pixels.shape[0])
        if self.count % hp["pl_every"] == 0:
            self._descend("G", self._pl_loss(pixels.shape[0]))
        self.count += 1


# ---------------------------------------------------------------------------------------------------
# FOMM (zoo.reenact's `fomm`, the reenact family's step)


def coordinate_grid(h: int, w: int, device: torch.device | None = None) -> Tensor:
    """zoo.warp.make_coordinate_grid: [h, w, 2] (x, y) of pixel centres from -1 to 1, grid_sample's align_corners grid."""
    x, y = torch.linspace(-1.0, 1.0, w, device=device), torch.linspace(-1.0, 1.0, h, device=device)
    return torch.stack(torch.meshgrid(x, y, indexing="xy"), -1)


def antialias_downsample(x: Tensor, scale: float) -> Tensor:
    """zoo.warp.antialias_downsample: FOMM's Gaussian blur (zero padding) then every (1/scale)-th pixel from pixel 0.

    The blur is strided separable depthwise convs (sigma (1/scale - 1) / 2, 2 round(4 sigma) + 1 taps).
    """
    if scale == 1:
        return x
    stride = round(1 / scale)
    sigma = (stride - 1) / 2
    size = 2 * round(sigma * 4) + 1
    taps = gaussian(size, sigma).to(x.device, x.dtype)
    c, pad = x.shape[1], (size - 1) // 2
    x = F.conv2d(x, taps.view(1, 1, size, 1).expand(c, 1, size, 1), stride=(stride, 1), padding=(pad, 0), groups=c)
    return F.conv2d(x, taps.view(1, 1, 1, size).expand(c, 1, 1, size), stride=(1, stride), padding=(0, pad), groups=c)


def kp2gaussian(kp: Tensor, h: int, w: int, variance: float) -> Tensor:
    """zoo.warp.kp2gaussian, channels first: kp [B, K, 2] -> [B, K, h, w] maps exp(-|z - kp|^2 / (2 variance))."""
    diff = coordinate_grid(h, w, kp.device)[None, None] - kp[:, :, None, None, :]
    return torch.exp(-0.5 * diff.square().sum(-1) / variance)


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """A flow [B, h, w, 2] resized bilinearly with align_corners (zoo.warp.resize_bilinear); the same size returns it."""
    if tuple(flow.shape[1:3]) == tuple(size):
        return flow
    return F.interpolate(flow.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=True).permute(0, 2, 3, 1)


def deform(x: Tensor, flow: Tensor) -> Tensor:
    """zoo.reenact.deform: x [B, C, H, W] sampled at the flow resized to H x W, bilinear, zeros, align_corners."""
    return F.grid_sample(x, resize_flow(flow, tuple(x.shape[2:])), align_corners=True)


class _SameBlock(nn.Module):
    """zoo.reenact.SameBlock: conv (kernel k, same size) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


class _DownBlock(_SameBlock):
    """zoo.reenact.DownBlock: 3x3 conv -> BatchNorm -> ReLU -> 2x2 average pool."""

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(super().forward(x), 2)


class _UpBlock(_SameBlock):
    """zoo.reenact.UpBlock: nearest 2x upsampling -> 3x3 conv -> BatchNorm -> ReLU."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _ResBlock(nn.Module):
    """zoo.reenact.ResBlock: BN -> ReLU -> 3x3 conv -> BN -> ReLU -> 3x3 conv, plus the input."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(ch), nn.Conv2d(ch, ch, 3, padding=1)
        self.norm2, self.conv2 = nn.BatchNorm2d(ch), nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))


class _Hourglass(nn.Module):
    """zoo.reenact.Hourglass: DownBlocks to min(max, be 2^(i+1)), UpBlocks back, each concatenated with its skip."""

    def __init__(self, cin: int, block_expansion: int, max_features: int, num_blocks: int) -> None:
        super().__init__()

        def width(i: int) -> int:
            return min(max_features, block_expansion * 2**i)

        self.down = nn.ModuleList(_DownBlock(cin if i == 0 else width(i), width(i + 1)) for i in range(num_blocks))
        self.up = nn.ModuleList(_UpBlock(width(i + 1) * (1 if i == num_blocks - 1 else 2), width(i))
                                for i in range(num_blocks))  # the zoo's up{i}, run deepest first
        self.out_channels = block_expansion + cin

    def forward(self, x: Tensor) -> Tensor:
        skips = [x]
        for block in self.down:
            skips.append(block(skips[-1]))
        out = skips.pop()
        for block in reversed(self.up):
            out = torch.cat([block(out), skips.pop()], 1)
        return out


class _KeypointDetector(nn.Module):
    """zoo.reenact.KeypointDetector: anti-aliased input, hourglass, 7x7 heatmap conv, softmax at a temperature,
    expected coordinates; the 7x7 Jacobian conv initialised to the identity, pooled with the heatmap weights."""

    def __init__(self, colors: int, num_kp: int, block_expansion: int, max_features: int, num_blocks: int,
                 scale_factor: float, temperature: float, estimate_jacobian: bool, padding: int) -> None:
        super().__init__()
        self.scale, self.temperature = scale_factor, temperature
        self.predictor = _Hourglass(colors, block_expansion, max_features, num_blocks)
        self.kp = nn.Conv2d(self.predictor.out_channels, num_kp, 7, padding=padding)
        self.jacobian = None
        if estimate_jacobian:
            self.jacobian = nn.Conv2d(self.predictor.out_channels, 4 * num_kp, 7, padding=padding)
            with torch.no_grad():
                self.jacobian.weight.zero_()
                self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(num_kp))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Images [B, C, H, W] in [0, 1] -> {"value": [B, K, 2], "jacobian": [B, K, 2, 2]}."""
        features = self.predictor(antialias_downsample(x, self.scale))
        logits = self.kp(features)
        b, k, h, w = logits.shape
        heatmap = F.softmax(logits.flatten(2) / self.temperature, -1).view(b, k, h, w)
        out = {"value": torch.einsum("bkhw,hwc->bkc", heatmap, coordinate_grid(h, w, x.device))}
        if self.jacobian is not None:
            maps = self.jacobian(features).view(b, k, 4, h, w)
            out["jacobian"] = torch.einsum("bkhw,bkfhw->bkf", heatmap, maps).view(b, k, 2, 2)
        return out


def sparse_motions(h: int, w: int, kp_source: dict[str, Tensor], kp_driving: dict[str, Tensor]) -> Tensor:
    """zoo.reenact.sparse_motions: [B, K+1, h, w, 2], slot 0 the identity, slot k kp_s + J_s J_d^-1 (z - kp_d)."""
    grid = coordinate_grid(h, w, kp_driving["value"].device)
    z = grid[None, None] - kp_driving["value"][:, :, None, None, :]
    if "jacobian" in kp_driving and "jacobian" in kp_source:
        jac = kp_source["jacobian"] @ torch.linalg.inv(kp_driving["jacobian"])
        z = torch.einsum("bkij,bkhwj->bkhwi", jac, z)
    motions = z + kp_source["value"][:, :, None, None, :]
    return torch.cat([grid.expand(motions.shape[0], 1, h, w, 2), motions], 1)


class _DenseMotion(nn.Module):
    """zoo.reenact.DenseMotion: per slot the heatmap difference and the source moved by that motion, an hourglass,
    7x7 convs to K+1 softmax masks (the flow is their mix of the motions) and a sigmoid occlusion map."""

    def __init__(self, colors: int, num_kp: int, block_expansion: int, max_features: int, num_blocks: int,
                 scale_factor: float, kp_variance: float, estimate_occlusion: bool) -> None:
        super().__init__()
        self.scale, self.variance = scale_factor, kp_variance
        self.hourglass = _Hourglass((num_kp + 1) * (colors + 1), block_expansion, max_features, num_blocks)
        self.mask = nn.Conv2d(self.hourglass.out_channels, num_kp + 1, 7, padding=3)
        self.occlusion = nn.Conv2d(self.hourglass.out_channels, 1, 7, padding=3) if estimate_occlusion else None

    def forward(self, source: Tensor, kp_source: dict[str, Tensor], kp_driving: dict[str, Tensor]
                ) -> tuple[Tensor, Tensor | None]:
        """-> (flow [B, h, w, 2] in source coordinates, occlusion [B, 1, h, w] or None)."""
        source = antialias_downsample(source, self.scale)
        b, c, h, w = source.shape
        heat = kp2gaussian(kp_driving["value"], h, w, self.variance) - kp2gaussian(kp_source["value"], h, w,
                                                                                   self.variance)
        heat = torch.cat([heat.new_zeros(b, 1, h, w), heat], 1)
        motions = sparse_motions(h, w, kp_source, kp_driving)
        s = motions.shape[1]
        moved = F.grid_sample(source, motions.reshape(b, s * h, w, 2), align_corners=True).view(b, c, s, h, w)
        slots = torch.cat([heat[:, :, None], moved.transpose(1, 2)], 2).reshape(b, s * (c + 1), h, w)
        features = self.hourglass(slots)
        masks = F.softmax(self.mask(features), 1)
        flow = torch.einsum("bshwt,bshw->bhwt", motions, masks)
        return flow, (torch.sigmoid(self.occlusion(features)) if self.occlusion is not None else None)


class _Generator(nn.Module):
    """zoo.reenact.Generator: 7x7 SameBlock, DownBlocks, warp by the flow, times occlusion, ResBlocks, UpBlocks,
    7x7 conv, sigmoid."""

    def __init__(self, colors: int, block_expansion: int, max_features: int, num_down_blocks: int,
                 num_bottleneck_blocks: int) -> None:
        super().__init__()

        def width(i: int) -> int:
            return min(max_features, block_expansion * 2**i)

        self.first = _SameBlock(colors, block_expansion, 7)
        self.down = nn.ModuleList(_DownBlock(block_expansion if i == 0 else width(i), width(i + 1))
                                  for i in range(num_down_blocks))
        self.res = nn.ModuleList(_ResBlock(width(num_down_blocks)) for _ in range(num_bottleneck_blocks))
        self.up = nn.ModuleList(_UpBlock(width(i + 1), width(i)) for i in range(num_down_blocks))  # run deepest first
        self.final = nn.Conv2d(width(0), colors, 7, padding=3)

    def forward(self, source: Tensor, flow: Tensor, occlusion: Tensor | None) -> Tensor:
        out = self.first(source)
        for block in self.down:
            out = block(out)
        out = deform(out, flow)
        if occlusion is not None:
            size = tuple(out.shape[2:])
            out = out * (occlusion if tuple(occlusion.shape[2:]) == size else
                         F.interpolate(occlusion, size=size, mode="bilinear", align_corners=True))
        for block in [*self.res, *reversed(self.up)]:
            out = block(out)
        return torch.sigmoid(self.final(out))


class FOMM(nn.Module):
    """zoo.reenact's `fomm` (Reenactor with motion "fomm", norm "batch"): keypoint detector, dense motion, generator.

    `forward` is the reenact family's training pass (`_training_pass`): keypoints of the source and
    the driving frame, the source animated to the driving keypoints, keypoints of the warped frame.
    """

    def __init__(self, image: tuple[int, int, int], motion: str, num_kp: int, kp_scale_factor: float,
                 kp_block_expansion: int, kp_max_features: int, kp_num_blocks: int, kp_padding: int,
                 temperature: float, estimate_jacobian: bool, dm_block_expansion: int, dm_max_features: int,
                 dm_num_blocks: int, dm_scale_factor: float, kp_variance: float, estimate_occlusion: bool,
                 gen_block_expansion: int, gen_max_features: int, gen_num_down_blocks: int,
                 gen_num_bottleneck_blocks: int, norm: str, background_affine: bool = False, multi_mask: bool = False,
                 **tps_fields: Any) -> None:
        super().__init__()
        if motion != "fomm" or norm != "batch" or background_affine or multi_mask:
            raise NotImplementedError("the reenactment twin is FOMM's (motion 'fomm', batch norm); TPSMM has none")
        colors = image[2]
        self.kp_detector = _KeypointDetector(colors, num_kp, kp_block_expansion, kp_max_features, kp_num_blocks,
                                             kp_scale_factor, temperature, estimate_jacobian, kp_padding)
        self.dense_motion = _DenseMotion(colors, num_kp, dm_block_expansion, dm_max_features, dm_num_blocks,
                                         dm_scale_factor, kp_variance, estimate_occlusion)
        self.generator = _Generator(colors, gen_block_expansion, gen_max_features, gen_num_down_blocks,
                                    gen_num_bottleneck_blocks)

    def forward(self, source: Tensor, driving: Tensor, transformed: Tensor) -> dict[str, Any]:
        """-> {"prediction" [B, C, H, W], "kp_driving", "kp_transformed"}, frames [B, C, H, W] in [0, 1]."""
        kp_source, kp_driving = self.kp_detector(source), self.kp_detector(driving)
        flow, occlusion = self.dense_motion(source, kp_source, kp_driving)
        prediction = self.generator(source, flow, occlusion)
        return {"prediction": prediction, "kp_driving": kp_driving, "kp_transformed": self.kp_detector(transformed)}


_RANDOM_TPS_EPS = 1e-6


def random_tps(batch: int, sigma_affine: float, sigma_tps: float, points: int, device: torch.device | None = None
               ) -> tuple[Tensor, Tensor, Tensor]:
    """zoo.warp.random_tps from torch's generator: theta [B, 2, 3] = [I | 0] + N(0, sigma_affine), control points
    [P, 2] on a points x points grid, radial weights [B, P] ~ N(0, sigma_tps)."""
    theta = torch.eye(2, 3, device=device) + sigma_affine * torch.randn(batch, 2, 3, device=device)
    control = coordinate_grid(points, points, device).reshape(-1, 2)
    return theta, control, sigma_tps * torch.randn(batch, points * points, device=device)


def random_tps_warp(t: tuple[Tensor, Tensor, Tensor], coords: Tensor) -> Tensor:
    """zoo.warp.random_tps_warp: theta [z; 1] plus sum_p w_p d_p^2 log(d_p + 1e-6) on both axes, d_p the L1 distance."""
    theta, control, params = t
    out = torch.einsum("bij,bnj->bni", theta[:, :, :2], coords) + theta[:, None, :, 2]
    d = (coords[:, :, None, :] - control).abs().sum(-1)
    return out + (d.square() * torch.log(d + _RANDOM_TPS_EPS) * params[:, None, :]).sum(-1, keepdim=True)


def random_tps_jacobian(t: tuple[Tensor, Tensor, Tensor], coords: Tensor) -> Tensor:
    """d warp / d z at coords [B, N, 2] -> [B, N, 2, 2] (row i: output i), in closed form: theta's block plus the
    radial term's gradient sum_p w_p (2 d log(d + eps) + d^2 / (d + eps)) sign(z - c_p) in both rows."""
    theta, control, params = t
    offset = coords[:, :, None, :] - control
    d = offset.abs().sum(-1)
    slope = params[:, None, :] * (2 * d * torch.log(d + _RANDOM_TPS_EPS) + d.square() / (d + _RANDOM_TPS_EPS))
    radial = torch.einsum("bnp,bnpj->bnj", slope, torch.sign(offset))
    return theta[:, None, :, :2] + radial[:, :, None, :]


def random_tps_frame(t: tuple[Tensor, Tensor, Tensor], frame: Tensor) -> Tensor:
    """zoo.warp.random_tps_frame: frame [B, C, H, W] sampled at the warped identity grid, reflection padding."""
    b, _, h, w = frame.shape
    grid = coordinate_grid(h, w, frame.device).reshape(1, h * w, 2).expand(b, h * w, 2)
    warped = random_tps_warp(t, grid).reshape(b, h, w, 2)
    return F.grid_sample(frame, warped, padding_mode="reflection", align_corners=True)


def dssim_window(side: int) -> int:
    """train.families.reenact.dssim_window: odd, (side // 2) | 1 clipped to [3, 11], never above the side."""
    return min(side, 11, max(3, (side // 2) | 1))


class FOMMTwin(Twin):
    """The reenact family's step for `fomm`: FOMM's training losses on (source, driving) pairs, one Adam update.

    Per step: FOMM's random warp T per example (`random_tps`, torch's generator), the driving frame
    warped by it (reflection padding), the training pass (`FOMM.forward`, batch norm in train mode
    for each of its three keypoint-detector calls), then `l1_weight` L1 + `dssim_weight` DSSIM over the
    anti-aliased pyramid at `scales` (window `dssim_window` of each map), `equivariance_value`
    |kp(D) - T(kp(T D))| and `equivariance_jacobian` |I - J(D)^-1 J_T J(T D)|, averaged as the family.
    """

    LOSSES = ("_loss",)

    def __init__(self, spec: Spec, channels_last: bool = False, compile: bool = False) -> None:
        hp = spec.hparams
        if hp["vgg_weights"] or hp["gan_weight"] or hp["ema_decay"] or spec.optim.get("weight_decay"):
            raise NotImplementedError("the FOMM twin is the L1 + DSSIM pyramid and equivariance step, no VGG19, GAN, "
                                      "EMA or weight decay")
        super().__init__(spec, channels_last, compile)
        side = spec.image[0]
        self.windows = [gaussian(dssim_window(math.ceil(side * s)), 1.5) for s in hp["scales"]]

    def build(self) -> dict[str, nn.Module]:
        return {"reenactor": FOMM(self.spec.image, **self.spec.fields)}

    def batch(self, size: int | None = None) -> dict[str, Any]:
        h, w, c = self.spec.image
        shape = (size or self.spec.batch, c, h, w)
        return {"source_image": self._images(shape, torch.uint8), "driving_image": self._images(shape, torch.uint8)}

    def _warp(self, batch: int) -> tuple[Tensor, Tensor, Tensor]:
        hp = self.spec.hparams
        return random_tps(batch, hp["sigma_affine"], hp["sigma_tps"], hp["points_tps"])

    def inputs(self, batch: dict[str, Any]) -> dict[str, tuple[Tensor, ...]]:
        source, driving = (batch[k].float() / 255.0 for k in ("source_image", "driving_image"))
        return {"reenactor": (source, driving, random_tps_frame(self._warp(source.shape[0]), driving))}

    def _recon(self, prediction: Tensor, target: Tensor) -> Tensor:
        """train.families.reenact.l1_dssim_pyramid, averaged over the batch."""
        hp = self.spec.hparams
        total = prediction.new_zeros(prediction.shape[0])
        for scale, kernel in zip(hp["scales"], self.windows):
            p, t = antialias_downsample(prediction, scale), antialias_downsample(target, scale)
            total = total + hp["l1_weight"] * (p - t).abs().mean((1, 2, 3))
            if hp["dssim_weight"]:
                total = total + hp["dssim_weight"] * dssim(p, t, kernel)
        return total.mean()

    def _loss(self, source_pixels: Tensor, driving_pixels: Tensor) -> Tensor:
        hp = self.spec.hparams
        source, driving = source_pixels.float() / 255.0, driving_pixels.float() / 255.0
        t = self._warp(source.shape[0])
        out = self.nets["reenactor"](source, driving, random_tps_frame(t, driving))
        kp_d, kp_t = out["kp_driving"], out["kp_transformed"]
        loss = self._recon(out["prediction"], driving)
        loss = loss + hp["equivariance_value"] * (kp_d["value"] - random_tps_warp(t, kp_t["value"])).abs().mean()
        if "jacobian" in kp_d and hp["equivariance_jacobian"]:
            moved = random_tps_jacobian(t, kp_t["value"]) @ kp_t["jacobian"]
            product = torch.linalg.inv(kp_d["jacobian"]) @ moved
            loss = loss + hp["equivariance_jacobian"] * (torch.eye(2, device=product.device) - product).abs().mean()
        return loss

    def step(self, batch: dict[str, Any]) -> None:
        self.loss(batch["source_image"], batch["driving_image"]).backward()
        self._update("reenactor")
        self.count += 1


_TWINS: dict[str, type[Twin]] = {"vae": VAETwin, "swap": SwapTwin, "gan": GANTwin, "reenact": FOMMTwin}


def make(name: str | Spec, channels_last: bool = False, compile: bool = False) -> Twin:
    """The twin of SPECS[name], or of a Spec given directly."""
    spec = SPECS[name] if isinstance(name, str) else name
    cls = StyleGAN2Twin if spec.model == "stylegan2_g" else _TWINS[spec.family]
    return cls(spec, channels_last, compile)


def param_counts(name: str) -> dict[str, int]:
    """Parameters of each net of the twin, named as the JAX family's state["params"]."""
    return {k: sum(p.numel() for p in net.parameters()) for k, net in make(name).nets.items()}


def forward_macs(net: nn.Module, *inputs: Tensor) -> int:
    """MACs of the Conv2d, ConvTranspose2d and Linear calls (and the counted functional ones) of one forward pass."""
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
    _MacCount.total = 0
    try:
        with torch.no_grad():
            net.eval()(*inputs)
        total += _MacCount.total
    finally:
        _MacCount.total = None
        net.train(training)
        for handle in handles:
            handle.remove()
    return total


def stylegan2_passes(mixing: bool) -> dict[str, dict[str, int]]:
    """Forward-pass multiples per example of each StyleGAN2 step: "G" is mapping + synthesis, "G.mapping" the extra
    mapping of style mixing's second z; a double backward (R1, path length) is 6: forward, input gradient, and
    the input and weight gradients of both."""
    extra = int(mixing)
    return {"D": {"G": 1, "G.mapping": extra, "D": 3 + 3}, "D_r1": {"D": 6},
            "G": {"G": 3, "G.mapping": 3 * extra, "D": 2}, "G_pl": {"G": 6, "G.mapping": 6 * extra}}


def _stylegan2_flops(spec: Spec, twin: Twin, batch: int) -> dict[str, Any]:
    """`step_flops` of a StyleGAN2 spec: each step's FLOPs, and their mean per trainer step over the schedule."""
    inputs = twin.inputs(twin.batch(1))
    gen = twin.nets["G"]
    macs = {"G": forward_macs(gen, *inputs["G"]), "G.mapping": forward_macs(gen.mapping, *inputs["G"]),
            "D": forward_macs(twin.nets["D"], *inputs["D"])}
    passes = stylegan2_passes(bool(spec.hparams["style_mixing"]))
    examples = {"D": batch, "D_r1": batch, "G": batch, "G_pl": batch // spec.hparams["pl_batch_shrink"]}
    per_step = {k: examples[k] * sum(2 * macs[n] * m for n, m in passes[k].items()) for k in passes}
    per_cycle = sum(per_step[k] * spec.cycle // every for k, every in spec.steps_every.items())
    flops = per_cycle // spec.cycle
    return {"convention": FLOP_CONVENTION, "forward_macs_per_example": macs, "example": "an image",
            "forward_passes": passes, "steps_every": spec.steps_every, "flops_per_named_step": per_step,
            "flops_per_step": flops, "gflop_per_step": round(flops / 1e9, 3)}


def step_flops(name: str, batch: int = 0) -> dict[str, Any]:
    """Analytic FLOPs of one training step of SPECS[name] at its batch size (or `batch`), by `FLOP_CONVENTION`.

    StyleGAN2's figure is the mean over its 16-step schedule (one R1 and four path-length steps in 16).
    """
    spec, twin = SPECS[name], make(name)
    if spec.model == "stylegan2_g":
        return _stylegan2_flops(spec, twin, batch or spec.batch)
    inputs = twin.inputs(twin.batch(1))
    macs = {k: forward_macs(net, *inputs[k]) for k, net in twin.nets.items()}
    flops = (batch or spec.batch) * sum(2 * macs[k] * n for k, n in PASSES[spec.family].items())
    return {"convention": FLOP_CONVENTION, "forward_macs_per_example": macs,
            "example": _EXAMPLES.get(spec.family, "an image"), "forward_passes": PASSES[spec.family],
            "flops_per_step": flops, "gflop_per_step": round(flops / 1e9, 3)}
