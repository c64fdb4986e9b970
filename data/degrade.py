"""Image degradations that detectors are trained and tested under: JPEG, Gaussian blur, down-up resize, H.264.

Host-side NumPy/PIL on HxWxC images (or [T, H, W, C] clips for H.264), uint8 or float in [0, 1]; each
returns the input's dtype. JPEG and H.264 are 8-bit codecs, so a float image goes through
`provenance.to_uint8` (round to 1/255) and comes back as the decoded bytes / 255.

* `jpeg`: PIL's encoder (libjpeg) at `quality`, with 4:2:0 chroma subsampling, which is PIL's default
  for RGB and is passed explicitly; one-channel images are encoded grey (no chroma).
* `gaussian_blur`: a separable Gaussian truncated at 4 sigma (radius int(4 sigma + 0.5)), edges
  extended by half-sample reflection (d c b a | a b c d), i.e. scipy.ndimage.gaussian_filter with
  mode="reflect" and truncate=4.0, which is what Wang et al. (CNNDetection) blur with.
* `resize_down_up`: PIL's bilinear resize (a triangle filter whose support widens by the scale when
  shrinking, i.e. antialiased) to round(factor * size), then back, channel by channel on 32-bit float
  images.
* `h264`: the clip through the ffmpeg binary imageio-ffmpeg ships (as `data.faces.video_out` writes
  video): libx264, `-preset medium`, `-crf`, yuv420p, one thread so the bytes do not depend on the
  machine's core count, then decoded back. Odd sizes are padded by repeating the last row/column
  (`video_out.pad_even`) and cropped back.

`ROBUSTNESS_SWEEP` names the rows an evaluation reports (FF++'s c23/c40 crfs, Wang's JPEG and blur
ranges, Durall's resize warning) and `apply_sweep` applies one to a batch. `DetectorAugment` is the
training-time augmentation of Wang et al. 2020 (blur sigma ~ U[0, 3], JPEG quality ~ U{30..100}, each
with its probability, flips) as a grain RandomMap seeded per example like `data.augment.SwapAugment`.
"""
from __future__ import annotations

import dataclasses
import io
import subprocess
import types
from typing import Literal

import grain
import numpy as np
from PIL import Image

from data import provenance
from zoo.errors import ConfigError, DataError

__all__ = [
    "ROBUSTNESS_SWEEP",
    "Degradation",
    "DetectorAugment",
    "apply_sweep",
    "gaussian_blur",
    "h264",
    "jpeg",
    "resize_down_up",
]

BLUR_TRUNCATE = 4.0
"""Kernel radius in sigmas (scipy.ndimage's default, and so CNNDetection's)."""
H264_FPS = 25
"""Frame rate the raw frames are declared at; with a constant rate factor it changes little, but it is fixed."""


def _checked(image: np.ndarray, name: str, ndim: int = 3, channels: tuple[int, ...] | None = None) -> np.ndarray:
    """`image` as an array of `ndim` dims, uint8 or float in [0, 1] with allowed channels; DataError otherwise."""
    array = np.asarray(image)
    layout = "HxWxC" if ndim == 3 else "[T, H, W, C]"
    if array.ndim != ndim or 0 in array.shape:
        raise DataError(f"{name} must be a non-empty {layout} array; got shape {array.shape}")
    if channels is not None and array.shape[-1] not in channels:
        raise DataError(f"{name} has {array.shape[-1]} channels; this codec takes {' or '.join(map(str, channels))} "
                        "(RGB or grey): drop the alpha channel or convert first")
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{name} must be uint8 or float in [0, 1]; got dtype {array.dtype}")
    lo, hi = float(array.min()), float(array.max())
    if not (lo >= -1e-6 and hi <= 1 + 1e-6):
        raise DataError(f"{name} is float but not in [0, 1] (min {lo:.4g}, max {hi:.4g}); scale it to [0, 1]")
    return array


def _like(decoded: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Decoded uint8 pixels in `original`'s dtype (float as value / 255)."""
    if original.dtype == np.uint8:
        return decoded
    return (decoded.astype(np.float64) / 255.0).astype(original.dtype)


def _from_float(x: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Float results in `original`'s dtype: uint8 rounded and clipped, floats clipped to [0, 1]."""
    if original.dtype == np.uint8:
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return np.clip(x, 0.0, 1.0).astype(original.dtype)


# ----------------------------------------------------------------------------------------------- JPEG


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """The image after a JPEG save and load at `quality` (1-100) with PIL, 4:2:0 chroma (PIL's default)."""
    array = _checked(image, "image", channels=(1, 3))
    if not (isinstance(quality, (int, np.integer)) and 1 <= quality <= 100):
        raise ConfigError(f"JPEG quality={quality!r} must be an integer in 1..100 (PIL's scale; 75 is its default)")
    pixels = provenance.to_uint8(array)
    grey = pixels.shape[-1] == 1
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if grey else pixels).save(buffer, format="JPEG", quality=int(quality),
                                                              subsampling="4:2:0")
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        out = np.asarray(decoded.convert("L" if grey else "RGB"))
    return _like(out[..., None] if grey else out, array)


# ----------------------------------------------------------------------------------------------- blur


def gaussian_kernel(sigma: float, truncate: float = BLUR_TRUNCATE) -> np.ndarray:
    """Normalised 1-D Gaussian weights on [-r, r], r = int(truncate * sigma + 0.5), as scipy.ndimage builds them."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    return weights / weights.sum()


def _convolve_axis(x: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """`x` convolved with a symmetric kernel along `axis`, edges extended by half-sample reflection."""
    radius = weights.size // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(x, pad, mode="symmetric")
    n = x.shape[axis]
    out = np.zeros_like(x)
    for k, w in enumerate(weights):
        out += w * np.take(padded, np.arange(k, k + n), axis=axis)
    return out


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """The image blurred by a Gaussian of `sigma` pixels per channel (0 = unchanged); see the module docstring."""
    array = _checked(image, "image")
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ConfigError(f"blur sigma={sigma!r} must be a finite number >= 0 (pixels; Wang et al. use 0 to 3)")
    if sigma == 0:
        return array.copy()
    weights = gaussian_kernel(sigma)
    x = array.astype(np.float64)
    x = _convolve_axis(_convolve_axis(x, weights, 0), weights, 1)
    return _from_float(x, array)


# --------------------------------------------------------------------------------------------- resize


def resize_down_up(image: np.ndarray, factor: float) -> np.ndarray:
    """The image shrunk to round(factor * size) and enlarged back, PIL bilinear both ways (see module docstring)."""
    array = _checked(image, "image")
    if not (np.isfinite(factor) and 0 < factor <= 1):
        raise ConfigError(f"resize factor={factor!r} must be in (0, 1]: the image is shrunk by it, then restored")
    height, width = array.shape[:2]
    small = (max(1, round(height * factor)), max(1, round(width * factor)))
    return _resize(_resize(array, small), (height, width))


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` resized to (height, width) by PIL bilinear, each channel as a 32-bit float image, in its dtype."""
    scale = np.float32(255.0 if image.dtype == np.uint8 else 1.0)
    channels = [np.asarray(Image.fromarray(image[..., c].astype(np.float32) / scale)
                           .resize(size[::-1], Image.Resampling.BILINEAR)) for c in range(image.shape[-1])]
    return _from_float(np.stack(channels, axis=-1) * scale, image)


# ---------------------------------------------------------------------------------------------- H.264


def h264(frames: np.ndarray, crf: int) -> np.ndarray:
    """A [T, H, W, C] clip (C = 3, or 1 for grey) after libx264 at `crf` in yuv420p, decoded back by ffmpeg.

    The frames are one clip: later frames are predicted from earlier ones, as in FF++'s c23/c40 videos.
    A single image is a one-frame clip, coded as an intra frame (milder than the P/B frames most video
    frames become at the same crf).
    """
    from data.faces import video_out

    clip = _checked(frames, "frames", ndim=4, channels=(1, 3))
    if not (isinstance(crf, (int, np.integer)) and 0 <= crf <= 51):
        raise ConfigError(f"crf={crf!r} must be an integer in 0..51 (libx264; FF++ uses 23 and 40)")
    pixels = provenance.to_uint8(clip)
    count, height, width, channels = pixels.shape
    pixels = np.stack([video_out.pad_even(frame) for frame in pixels])
    padded_h, padded_w = pixels.shape[1:3]
    pix_fmt = "rgb24" if channels == 3 else "gray"
    exe = video_out.ffmpeg_exe()
    quiet = [exe, "-hide_banner", "-loglevel", "error", "-nostdin"]
    encode = quiet + ["-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{padded_w}x{padded_h}",
                      "-framerate", str(H264_FPS), "-i", "pipe:0", "-c:v", "libx264", "-preset", "medium",
                      "-crf", str(int(crf)), "-pix_fmt", "yuv420p", "-threads", "1", "-f", "h264", "pipe:1"]
    decode = quiet + ["-f", "h264", "-i", "pipe:0", "-fps_mode", "passthrough",
                      "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]
    stream = _run(encode, pixels.tobytes(), "encode")
    raw = _run(decode, stream, "decode")
    frame_bytes = padded_h * padded_w * channels
    if len(raw) != count * frame_bytes:
        raise DataError(f"ffmpeg decoded {len(raw) / frame_bytes:g} frames of a {count}-frame H.264 clip "
                        f"({padded_w}x{padded_h}); the codec round trip must keep every frame")
    decoded = np.frombuffer(raw, np.uint8).reshape(count, padded_h, padded_w, channels)
    return _like(np.ascontiguousarray(decoded[:, :height, :width]), clip)


def _run(command: list[str], data: bytes, what: str) -> bytes:
    """ffmpeg's stdout for `data` on its stdin; DataError with its last message when it fails."""
    proc = subprocess.run(command, input=data, capture_output=True)
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise DataError(f"ffmpeg failed to {what} an H.264 clip ({message[-1] if message else 'no message'}); "
                        f"command: {' '.join(command[:1] + ['...'] + command[-6:])}")
    return proc.stdout


# ---------------------------------------------------------------------------------------------- sweep


@dataclasses.dataclass(frozen=True)
class Degradation:
    """One robustness row: an operation and its setting (JPEG quality, crf, blur sigma or resize factor)."""

    op: Literal["jpeg", "h264", "blur", "resize"]
    value: float


ROBUSTNESS_SWEEP: types.MappingProxyType[str, Degradation] = types.MappingProxyType({
    "jpeg90": Degradation("jpeg", 90),
    "jpeg50": Degradation("jpeg", 50),
    "jpeg30": Degradation("jpeg", 30),
    "h264_crf23": Degradation("h264", 23),
    "h264_crf40": Degradation("h264", 40),
    "blur1": Degradation("blur", 1.0),
    "blur2": Degradation("blur", 2.0),
    "resize0.5": Degradation("resize", 0.5),
})
"""The named rows `train.evaluate --metrics detect` reports beside the clean one, in this order."""


def apply_sweep(name: str, images: np.ndarray, clips: np.ndarray | None = None) -> np.ndarray:
    """A batch [B, H, W, C] after the sweep row `name`, in the batch's dtype.

    Per-image rows treat each image alone. H.264 rows encode each clip's frames together in batch order,
    `clips` giving a clip id per image (the `video` field); without it each image is its own one-frame
    clip, so no image's result depends on its neighbours in the batch.
    """
    if name not in ROBUSTNESS_SWEEP:
        raise ConfigError(f"unknown robustness row {name!r}; choose from {', '.join(ROBUSTNESS_SWEEP)}")
    batch = _checked(images, "images", ndim=4)
    row = ROBUSTNESS_SWEEP[name]
    if row.op == "h264":
        return _sweep_h264(batch, int(row.value), clips)
    op = {"jpeg": lambda x: jpeg(x, int(row.value)), "blur": lambda x: gaussian_blur(x, row.value),
          "resize": lambda x: resize_down_up(x, row.value)}[row.op]
    return np.stack([op(image) for image in batch])


def _sweep_h264(batch: np.ndarray, crf: int, clips: np.ndarray | None) -> np.ndarray:
    """Each clip of `batch` (by id in `clips`, or each image alone) through `h264`, put back in place."""
    if clips is None:
        return np.concatenate([h264(batch[i:i + 1], crf) for i in range(len(batch))])
    ids = np.asarray(clips)
    if ids.shape != (len(batch),):
        raise DataError(f"clips must give one clip id per image: {ids.shape} for a batch of {len(batch)}")
    out = np.empty_like(batch)
    for clip in np.unique(ids):
        where = np.flatnonzero(ids == clip)
        out[where] = h264(batch[where], crf)
    return out


# ------------------------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class DetectorAugment(grain.transforms.RandomMap):
    """Wang et al.'s detector augmentation for one example: blur, JPEG, optional resize-crop, flip.

    In CNNDetection's order: Gaussian blur with sigma ~ U[blur_sigma] (probability p_blur), then JPEG
    with quality ~ U{jpeg_quality, both ends included} (probability p_jpeg), then (this zoo's option,
    off by default) a random crop keeping the aspect, each side a fraction ~ U[crop_scale] of the
    image's, resized back with PIL bilinear (probability p_crop), then a left-right flip (probability
    p_flip). Wang's released detectors use p_blur = p_jpeg = 0.5 ("Blur+JPEG (0.5)", the default) or
    0.1; DeepfakeBench's Xception recipe is close (JPEG 40-100, blur by kernel size 3-7).

    Randomness only comes from the `rng` argument, and every call draws the same numbers from it
    whatever the probabilities, so a grain pipeline (which seeds it per example from the run's seed)
    reproduces each example exactly on resume. The image keeps its dtype and size.
    """

    p_blur: float = 0.5
    blur_sigma: tuple[float, float] = (0.0, 3.0)
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 100)
    p_crop: float = 0.0
    crop_scale: tuple[float, float] = (0.8, 1.0)
    p_flip: float = 0.5

    def __post_init__(self) -> None:
        for field in ("p_blur", "p_jpeg", "p_crop", "p_flip"):
            p = getattr(self, field)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"DetectorAugment.{field}={p} is a probability: give a value in [0, 1]")
        lo, hi = self.blur_sigma
        if not 0.0 <= lo <= hi:
            raise ConfigError(f"DetectorAugment.blur_sigma={self.blur_sigma} must be (low, high) with 0 <= low <= high")
        lo, hi = self.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise ConfigError(f"DetectorAugment.jpeg_quality={self.jpeg_quality} must be (low, high) in 1..100")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(f"DetectorAugment.crop_scale={self.crop_scale} must be (low, high) with 0 < low <= high <= 1")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One augmented copy of an HxWxC image, drawing 9 numbers from `rng`."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a np.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
        x = _checked(image, "image", channels=(1, 3))
        u_blur, u_jpeg, u_crop, u_flip = rng.random(4)
        sigma = rng.uniform(*self.blur_sigma)
        quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        side, top, left = rng.random(3)
        if u_blur < self.p_blur:
            x = gaussian_blur(x, sigma)
        if u_jpeg < self.p_jpeg:
            x = jpeg(x, quality)
        if u_crop < self.p_crop:
            x = _crop_resize(x, self.crop_scale[0] + side * (self.crop_scale[1] - self.crop_scale[0]), top, left)
        if u_flip < self.p_flip:
            x = x[:, ::-1]
        return np.ascontiguousarray(x)

    def random_map(self, example: dict, rng: np.random.Generator) -> dict:
        """The example with its "image" augmented; every other field passes through."""
        return {**example, "image": self(example["image"], rng)}


def _crop_resize(image: np.ndarray, fraction: float, top: float, left: float) -> np.ndarray:
    """The window of `fraction` of each side at relative offset (top, left) in [0, 1), resized back with PIL bilinear."""
    height, width = image.shape[:2]
    h, w = max(1, round(height * fraction)), max(1, round(width * fraction))
    y, x = int(top * (height - h + 1)), int(left * (width - w + 1))
    window = image[y:y + h, x:x + w]
    return window if (h, w) == (height, width) else _resize(window, (height, width))
