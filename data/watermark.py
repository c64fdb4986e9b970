"""An invisible watermark on generated images: `embed(image)` hides PAYLOAD, `detect(image)` reads it back.

Text chunks and container comments vanish with any re-save; this mark lives in the pixels. It is
invisible-watermark's "dwtDctSvd" method: a one-level Haar DWT of the BT.601 chroma plane U (offset 128,
as cv2 converts; a grey image uses its only plane), the LL band cut into 4x4 blocks, and in each block the
largest singular value of its DCT quantised to (k + 1/4 + bit/2) * SCALE (QIM). Bit i of the payload goes
to blocks i, i + n, ... in row-major order: one bit per 8x8 pixels, so a 64 px face holds 64 bits once
and a 256 px face 16 times (`capacity_blocks`).

invisible-watermark 0.2.0 is the reference, not the runtime: its encoder loops over blocks in Python
(215 ms for one 360x288 frame here, more than the merge's whole 110 ms per frame), so this module states
the same quantiser for all blocks at once with PyWavelets and a batched SVD (the new block is
B + (s0' - s0) u0 v0^T, which is what the library's idct(U S' V^T) of the block's DCT gives, the DCT
being orthonormal): tests/test_watermark.py checks it against the library's `encode_frame` to 1e-9 and
reads the written files back with the library's own decoder. CI installs the library for those tests;
marking and reading need only PyWavelets.

Choices, each measured by `python -m benchmarks watermark_survival` on synthetic faces (README, Provenance):
- dwtDctSvd, not the library's default dwtDct: dwtDct quantises the largest-magnitude LL coefficient of a
  block, and on smooth content (the renderer's faces, flat chroma) the quantised coefficient often stops
  being the largest, so the reader looks at another one: a third of clean 64 px faces read back. The
  singular value stays the largest; every clean face reads back.
- 64 bits (b"DFZ", the version, b"synt"): for a known payload the reader compares bits, and a longer one
  allows more wrong bits at the same false-positive bound (14 of 64 against 4 of 32, both <= 1e-5 for
  random bits): at 64 px JPEG 75 kept 72% of 64-bit marks, 55% of 32-bit and 50% of 16-bit ones. 64 bits
  is a 64 px face's whole capacity; a smaller image (under 64x64 px) is not marked and says so. At 256 px
  each bit has 16 blocks instead of 32: JPEG 50 keeps 50% of 64-bit marks against 80% of 32-bit ones.
- soft reading: each block votes -cos(2 pi (v - 1/4)) for its quantised value v (fraction of SCALE),
  summed per bit, instead of the library's hard 0/1 votes: a block pushed near the decision line counts little.
- SCALE 36, the library's: 42 dB PSNR on the faces. 54 and 72 survive JPEG 50 and H.264 at 64 px far
  better (38 and 36 dB) but show as faint colour blotches on flat skin at 72.

Beside the speed, the library's `WatermarkEncoder` refuses images under 256x256, writes floats into a
uint8 YUV array (truncating) and rebuilds the image with the horizontal and vertical detail bands swapped;
here any size with enough blocks is marked, the image is converted in float and rounded once, and the
bands go back in their order. The library's `WatermarkDecoder("bits", 64).decode(bgr, "dwtDctSvd")` reads
these marks from images of 256x256 px or more.

What the mark does not survive: crops that move the 8-pixel block grid, any resize that is not undone,
strong JPEG and H.264 at 64 px; it is a provenance hint for honest pipelines, not a tamper-proof fingerprint.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from einops import rearrange

from zoo.errors import DataError

VERSION = 1
PAYLOAD = b"DFZ" + bytes([VERSION]) + b"synt"
"""What every mark carries (64 bits): the zoo's tag, the format version, and "synt" (synthetic)."""
SCALE = 36.0
"""The QIM step in LL units of the U plane (invisible-watermark's default): larger survives more, shows more."""
BLOCK = 4
"""Blocks of BLOCK x BLOCK LL coefficients, each carrying one bit: one bit per 8x8 pixels."""
METHODS = ("dwtDct", "dwtDctSvd")
"""invisible-watermark's two block methods (its third, RivaGAN, is a network that needs torch and onnxruntime)."""
METHOD = "dwtDctSvd"
PLANE = "U"
"""Where the mark lives in an RGB image: BT.601 chroma U, as invisible-watermark does (Y for grey images)."""
MAX_BIT_ERRORS = 14
"""Bits of the 64 that may differ from PAYLOAD for `detect` to call the mark found: the most whose chance for
random bits stays under 1e-5 (3.5e-6); on 1072 unmarked real and synthetic images the closest had 20 wrong."""
INSTALL = "the watermark needs PyWavelets, a core dependency: pip install -e . (or pip install PyWavelets)"
_BT601 = np.array([[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]], np.float64)
"""RGB -> YUV rows (cv2's COLOR_RGB2YUV: U = 0.492 (B - Y), V = 0.877 (R - Y)); U and V are offset by 128."""


def available() -> bool:
    """Whether the watermark can be embedded and read here (PyWavelets installed)."""
    try:
        import pywt  # noqa: F401
    except ImportError:
        return False
    return True


def payload_bits(payload: bytes = PAYLOAD) -> np.ndarray:
    """The payload as bits, most significant first (the library's order)."""
    return np.unpackbits(np.frombuffer(payload, np.uint8)).astype(np.int64)


def capacity_blocks(shape: tuple[int, ...]) -> int:
    """How many one-bit blocks an image of this shape holds (each payload bit goes to blocks i, i+n, ...)."""
    height, width = shape[:2]
    return (height // 4 * 4 // 2 // BLOCK) * (width // 4 * 4 // 2 // BLOCK)


def _as_uint8(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise DataError(f"an image to watermark is HxW (grey) or HxWx3 (RGB); got shape {array.shape}")
    return array


def _plane(array: np.ndarray, plane: str = PLANE) -> np.ndarray:
    """The plane the mark lives in, as float64: Y, U or V (U, V offset by 128) of an RGB image, a grey image itself."""
    if array.ndim == 2:
        return array.astype(np.float64)
    row = "YUV".index(plane)
    return array.astype(np.float64) @ _BT601[row] + (128.0 if row else 0.0)


def _with_plane(array: np.ndarray, values: np.ndarray, plane: str = PLANE) -> np.ndarray:
    """The image with its mark plane replaced (the other two kept), rounded once to uint8."""
    if array.ndim == 2:
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    row = "YUV".index(plane)
    yuv = array.astype(np.float64) @ _BT601.T
    yuv[..., row] = values - (128.0 if row else 0.0)
    return np.clip(np.rint(yuv @ np.linalg.inv(_BT601).T), 0, 255).astype(np.uint8)


def embed(image: np.ndarray, payload: bytes = PAYLOAD, scale: float = SCALE, method: str = METHOD,
          plane: str = PLANE) -> np.ndarray:
    """The image (uint8 or float [0, 1]; HxW, HxWx1 or HxWx3) as uint8 of the same shape, carrying `payload`.

    DataError when the image has fewer blocks than the payload has bits (under 64x64 px for PAYLOAD).
    """
    import pywt

    source = np.asarray(image)
    array = _as_uint8(source)
    bits = payload_bits(payload)
    room = capacity_blocks(array.shape)
    if room < len(bits):
        raise DataError(f"a {array.shape[1]}x{array.shape[0]} image holds {room} watermark bits, fewer than the "
                        f"payload's {len(bits)}; one bit takes 8x8 px")
    height, width = array.shape[0] // 4 * 4, array.shape[1] // 4 * 4
    values = _plane(array, plane)
    ll, details = pywt.dwt2(values[:height, :width], "haar")
    blocks, put_back = _blocks(ll)
    carried = bits[np.arange(len(blocks)) % len(bits)]
    put_back(_quantise(blocks, carried, scale, method))
    values[:height, :width] = pywt.idwt2((ll, details), "haar")
    marked = _with_plane(array, values, plane)
    return marked.reshape(source.shape) if source.ndim == 3 and source.shape[-1] == 1 else marked


def _blocks(ll: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], None]]:
    """The LL band's whole BLOCK x BLOCK blocks, row-major [N, BLOCK, BLOCK], and a function writing blocks back."""
    rows, cols = ll.shape[0] // BLOCK, ll.shape[1] // BLOCK
    blocks = rearrange(ll[: rows * BLOCK, : cols * BLOCK], "(r i) (c j) -> (r c) i j", i=BLOCK, j=BLOCK)

    def put_back(new: np.ndarray) -> None:
        ll[: rows * BLOCK, : cols * BLOCK] = rearrange(new, "(r c) i j -> (r i) (c j)", r=rows)

    return blocks, put_back


def _quantise(blocks: np.ndarray, bits: np.ndarray, scale: float, method: str) -> np.ndarray:
    """Each block with its carrier set to (k + 1/4 + bit/2) * scale, k its old value's bin: the library's rule.

    dwtDctSvd: the largest singular value s0 (of the block's DCT, equal to the block's own), the block
    becoming B + (s0' - s0) u0 v0^T. dwtDct: the largest-magnitude coefficient but the first, sign kept.
    """
    if method == "dwtDctSvd":
        u, s, vh = np.linalg.svd(blocks)
        target = (np.floor(s[:, 0] / scale) + 0.25 + 0.5 * bits) * scale
        return blocks + (target - s[:, 0])[:, None, None] * u[:, :, :1] * vh[:, :1, :]
    if method == "dwtDct":
        flat = blocks.reshape(len(blocks), -1).copy()
        pos = np.argmax(np.abs(flat[:, 1:]), axis=1) + 1
        value = flat[np.arange(len(flat)), pos]
        flat[np.arange(len(flat)), pos] = np.sign(value + (value == 0)) * (
            np.floor(np.abs(value) / scale) + 0.25 + 0.5 * bits) * scale
        return flat.reshape(blocks.shape)
    raise DataError(f"watermark method {method!r} is unknown; use one of {METHODS}")


def block_values(image: np.ndarray, scale: float = SCALE, method: str = METHOD, plane: str = PLANE) -> np.ndarray:
    """The quantised value of every block, row-major, as a fraction of `scale` in [0, 1) (bit 0 at 1/4, 1 at 3/4).

    The values the library's decoders threshold at 1/2: dwtDctSvd's largest singular value of the block's
    DCT (equal to the block's own, cv2.dct being orthonormal), dwtDct's largest-magnitude coefficient but
    the first; computed here for all blocks at once.
    """
    import pywt

    array = _as_uint8(image)
    height, width = array.shape[0] // 4 * 4, array.shape[1] // 4 * 4
    if height < 2 * BLOCK or width < 2 * BLOCK:
        return np.zeros(0)
    ll, _ = pywt.dwt2(_plane(array, plane)[:height, :width], "haar")
    blocks, _ = _blocks(ll)
    if method == "dwtDctSvd":
        values = np.linalg.svd(blocks, compute_uv=False)[:, 0]
    elif method == "dwtDct":
        rest = np.abs(blocks.reshape(len(blocks), -1)[:, 1:])
        values = rest[np.arange(len(rest)), np.argmax(rest, axis=1)]
    else:
        raise DataError(f"watermark method {method!r} is unknown; use one of {METHODS}")
    return (values % scale) / scale


def bit_scores(image: np.ndarray, nbits: int = len(PAYLOAD) * 8, scale: float = SCALE, method: str = METHOD,
               plane: str = PLANE) -> np.ndarray:
    """Soft evidence for each of `nbits` payload bits: > 0 reads 1, < 0 reads 0, 0 none (no block carries it).

    Each block votes -cos(2 pi (v - 1/4)) for its value v (-1 at bit 0's centre, +1 at bit 1's, 0 halfway),
    summed over the blocks carrying the bit: a block pushed near the decision line by JPEG or H.264 counts
    little, where the library's hard votes count it fully (with a 32-bit payload, two blocks a bit at 64 px,
    JPEG 75 left 3% of 64 px faces readable with hard votes, 56% with these).
    """
    values = block_values(image, scale, method, plane)
    votes = -np.cos(2 * np.pi * (values - 0.25))
    return np.bincount(np.arange(len(values)) % nbits, weights=votes, minlength=nbits)[:nbits]


def bit_errors(image: np.ndarray, payload: bytes = PAYLOAD, scale: float = SCALE, method: str = METHOD,
               plane: str = PLANE) -> int:
    """How many of the payload's bits the image reads wrong (a bit with no evidence counts as wrong)."""
    expected = payload_bits(payload)
    scores = bit_scores(image, len(expected), scale, method, plane)
    read = np.where(scores == 0, -1, (scores > 0).astype(np.int64))
    return int(np.sum(read != expected))


def detect(image: np.ndarray, payload: bytes = PAYLOAD, max_errors: int = MAX_BIT_ERRORS) -> bytes | None:
    """`payload` when the image carries it (at most `max_errors` bits wrong), else None."""
    return payload if bit_errors(image, payload) <= max_errors else None


def describe() -> str:
    """One line naming the mark, for PNG chunks and manifests: method, payload and how to read it."""
    return (f"invisible-watermark's {METHOD} (as of 0.2.0) in the {PLANE} plane (Y if grey), scale {SCALE:g}, payload "
            f"{PAYLOAD!r} ({len(PAYLOAD) * 8} bits, found at <= {MAX_BIT_ERRORS} wrong); "
            "read: python -m data.provenance check FILE")

