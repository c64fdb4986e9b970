"""An invisible watermark on generated images: `embed(image)` hides PAYLOAD, `detect(image)` reads it back.

Text chunks and container comments vanish with any re-save; this mark lives in the pixels. It is
invisible-watermark's "dwtDctSvd" method: a one-level Haar DWT of the BT.601 chroma plane U (offset 128,
as cv2 converts; a grey image uses its only plane), the LL band cut into 4x4 blocks, and in each block the
largest singular value of its DCT quantised to (k + 1/4 + bit/2) * SCALE (QIM). Bit i of the payload goes
to blocks i, i + n, ... in row-major order: one bit per 8x8 pixels, so a 64 px face holds 64 bits once
and a 256 px face 16 times (CAPACITY: `capacity_blocks`). The quantiser is the library's own
(`EmbedDwtDctSvd.encode_frame`), loaded from its file without the package's `__init__`, which imports
torch for the RivaGAN method; the reading side is the same value computed for all blocks at once.

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
Around the library this module also differs from its `WatermarkEncoder` in three ways: it runs below
256x256 (the library refuses), it works in float and rounds once (the library writes floats into a uint8
YUV array, truncating), and it rebuilds the image from the DWT bands in their order (the library swaps the
horizontal and vertical detail bands). The library's `WatermarkDecoder("bits", 64).decode(bgr, "dwtDctSvd")`
reads these marks from images of 256x256 px or more.

What the mark does not survive: crops that move the 8-pixel block grid, any resize that is not undone,
strong JPEG and H.264 at 64 px; it is a provenance hint for honest pipelines, not a tamper-proof fingerprint.
"""
from __future__ import annotations

import functools
import importlib.util
import types

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
METHODS = {"dwtDct": ("maxDct", "EmbedMaxDct"), "dwtDctSvd": ("dwtDctSvd", "EmbedDwtDctSvd")}
"""invisible-watermark's two block methods: module and class (its third, RivaGAN, needs torch and onnxruntime)."""
METHOD = "dwtDctSvd"
PLANE = "U"
"""Where the mark lives in an RGB image: BT.601 chroma U, as invisible-watermark does (Y for grey images)."""
MAX_BIT_ERRORS = 14
"""Bits of the 64 that may differ from PAYLOAD for `detect` to call the mark found: the most whose chance for
random bits stays under 1e-5 (3.5e-6); on 1072 unmarked real and synthetic images the closest had 20 wrong."""
INSTALL = ("the watermark needs the `watermark` extra: pip install -e '.[watermark]' && "
           "pip install --no-deps invisible-watermark==0.2.0")
_BT601 = np.array([[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]], np.float64)
"""RGB -> YUV rows (cv2's COLOR_RGB2YUV: U = 0.492 (B - Y), V = 0.877 (R - Y)); U and V are offset by 128."""


@functools.cache
def _library(name: str) -> types.ModuleType:
    """invisible-watermark's `maxDct` or `dwtDctSvd` module, loaded from its file (the package's `__init__` imports torch)."""
    try:
        import cv2  # noqa: F401  (the library's modules need both; fail here with the install line)
        import pywt  # noqa: F401
        spec = importlib.util.find_spec("imwatermark")
    except ImportError as error:
        raise ImportError(INSTALL) from error
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(INSTALL)
    path = f"{list(spec.submodule_search_locations)[0]}/{name}.py"
    loader = importlib.util.spec_from_file_location(f"imwatermark_{name.lower()}", path)
    if loader is None or loader.loader is None:
        raise ImportError(f"{path} is missing; {INSTALL}")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def _embedder(bits: list[int], nbits: int, method: str) -> object:
    module, cls = METHODS[method]
    return getattr(_library(module), cls)(bits, wmLen=nbits, block=BLOCK)


def available() -> bool:
    """Whether the watermark can be embedded and read here (PyWavelets and invisible-watermark installed)."""
    try:
        _library(METHODS[METHOD][0])
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
    blocks = capacity_blocks(array.shape)
    if blocks < len(bits):
        raise DataError(f"a {array.shape[1]}x{array.shape[0]} image holds {blocks} watermark bits, fewer than the "
                        f"payload's {len(bits)}; one bit takes 8x8 px")
    height, width = array.shape[0] // 4 * 4, array.shape[1] // 4 * 4
    values = _plane(array, plane)
    ll, (ch, cv, cd) = pywt.dwt2(values[:height, :width], "haar")
    _embedder(list(bits), len(bits), method).encode_frame(ll, scale)
    values[:height, :width] = pywt.idwt2((ll, (ch, cv, cd)), "haar")
    marked = _with_plane(array, values, plane)
    return marked.reshape(source.shape) if source.ndim == 3 and source.shape[-1] == 1 else marked


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
    rows, cols = ll.shape[0] // BLOCK, ll.shape[1] // BLOCK
    blocks = rearrange(ll[: rows * BLOCK, : cols * BLOCK], "(r i) (c j) -> (r c) (i j)", i=BLOCK, j=BLOCK)
    if method == "dwtDctSvd":
        values = np.linalg.svd(blocks.reshape(-1, BLOCK, BLOCK), compute_uv=False)[:, 0]
    elif method == "dwtDct":
        rest = np.abs(blocks[:, 1:])
        values = rest[np.arange(len(rest)), np.argmax(rest, axis=1)]
    else:
        raise DataError(f"watermark method {method!r} is unknown; use one of {sorted(METHODS)}")
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
    """One line naming the mark, for PNG chunks and manifests: library, method, payload and how to read it."""
    version = _library_version()
    return (f"invisible-watermark {version} {METHOD} in the {PLANE} plane (Y if grey), scale {SCALE:g}, payload "
            f"{PAYLOAD!r} ({len(PAYLOAD) * 8} bits, found at <= {MAX_BIT_ERRORS} wrong); "
            "read: python -m data.provenance check FILE")


def _library_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("invisible-watermark")
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"
