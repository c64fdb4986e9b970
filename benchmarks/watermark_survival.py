"""How often the invisible watermark (data/watermark.py) is still read after common edits, and how often it is
read where there is none (issue 15, item 7).

    python -m benchmarks watermark_survival [--n 64] [--no-sweep] [--json watermark_survival.json]

Marked images: `--n` synthetic faces (data.synthetic, the renderer: no real person) at 64 and 256 px, each
marked by `data.watermark.embed`, then edited and read with `data.watermark.bit_errors`; "found" is at most
MAX_BIT_ERRORS of the payload's bits wrong, as `detect` decides. The edits (every one keeps or restores
the size the mark was written at, except the crop):
- none: the PNG pixels as written;
- jpeg90/75/50: PIL JPEG at that quality (4:2:0 chroma, PIL's default), decoded;
- resize0.5: PIL bicubic down to half size and back up to the original size (a half-size copy itself
  has no 8-pixel grid left to read: 0% by construction);
- crop90: the central 90% of each side (64 -> 58 px, 256 -> 230 px), read as it is: the crop moves the
  block grid by 3 and 13 px;
- h264_crf23: the faces as consecutive frames of one clip through `data.faces.video_out.write_mp4` at crf
  23 (libx264, yuv420p, 25 fps: how the merge verb writes video), decoded with `read_frames`. In the main
  table the frames go in unmarked and write_mp4's own hook marks them (the path a merged video takes).
False positives: the share of unmarked images where `detect` finds the mark: the same synthetic faces
unmarked, the 400 Olivetti faces (64 px grey), scikit-image's sample photographs (whole, and every
non-overlapping 64 and 256 px tile) and every 5th frame of the six GRID clips (360x288); the real images
come from ../shared/data and scikit-image and are only read here.
The sweep (skip with --no-sweep) repeats the table for invisible-watermark's two methods (dwtDct, dwtDctSvd)
and payloads of 16 to 64 bits (the first bytes of PAYLOAD + b"-zoo"), each with the largest bit-error
threshold whose chance for random bits is at most 1e-5 (`threshold`); 16 bits has none (P(0 errors) is
1.5e-5), so it is read with 0 errors allowed. `timing` gives the milliseconds of one embed and one read of a
360x288 frame (GRID's size), on this machine under its load (`machine`).
"""
from __future__ import annotations

import argparse
import io
import itertools
import math
import pathlib
import tempfile
import time
from typing import Any, Callable

import numpy as np
from PIL import Image

from benchmarks.common import emit, entry, machine
from data import watermark

ATTACKS = ("none", "jpeg90", "jpeg75", "jpeg50", "resize0.5", "crop90", "h264_crf23")
SIZES = (64, 256)
SWEEP_METHODS = ("dwtDct", "dwtDctSvd")
SWEEP_BITS = (16, 24, 32, 48, 64)
SWEEP_SCALES = (36.0, 54.0, 72.0)
RANDOM_BITS_FP = 1e-5
SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


def threshold(bits: int, bound: float = RANDOM_BITS_FP) -> int:
    """The most wrong bits allowed so that random bits pass with probability <= bound (0 if none does)."""
    total, best = 0.0, 0
    for t in range(bits + 1):
        total += math.comb(bits, t) / 2.0**bits
        if total > bound:
            return max(best, 0)
        best = t
    return best


def payload_of(bits: int) -> bytes:
    return (watermark.PAYLOAD + b"-zoo")[: bits // 8]


def faces(size: int, n: int) -> list[np.ndarray]:
    """n synthetic faces at `size` px (16 identities, n // 16 each, the test split)."""
    from data.synthetic import SyntheticFaces

    per = max(1, n // 16)
    source = SyntheticFaces(range(100, 116), per, size, seed=7, split="test")
    return [source[i]["image"] for i in range(min(n, len(source)))]


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(image_mode(image)))


def image_mode(image: np.ndarray) -> str:
    return "L" if image.ndim == 2 else "RGB"


def down_up(image: np.ndarray, factor: float = 0.5) -> np.ndarray:
    height, width = image.shape[:2]
    small = Image.fromarray(image).resize((round(width * factor), round(height * factor)), Image.BICUBIC)
    return np.asarray(small.resize((width, height), Image.BICUBIC))


def crop(image: np.ndarray, fraction: float = 0.9) -> np.ndarray:
    height, width = image.shape[:2]
    h, w = round(height * fraction), round(width * fraction)
    top, left = (height - h) // 2, (width - w) // 2
    return image[top: top + h, left: left + w]


def h264(frames: list[np.ndarray], crf: int = 23, mark: bool = False) -> list[np.ndarray]:
    """The frames through `video_out.write_mp4` (marking them itself when `mark`) and read back."""
    from data.faces import video_out

    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "clip.mp4"
        written = video_out.write_mp4(out, iter(frames), fps=25, crf=crf, title="watermark_survival benchmark",
                                      watermark=mark)
        decoded = list(video_out.read_frames(written.path, written.frames))
    height, width = frames[0].shape[:2]
    return [frame[:height, :width] for frame in decoded]


def attacked(images: list[np.ndarray], name: str) -> list[np.ndarray]:
    """The images after edit `name` (see the module docstring)."""
    ops: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "none": lambda x: x, "jpeg90": lambda x: jpeg(x, 90), "jpeg75": lambda x: jpeg(x, 75),
        "jpeg50": lambda x: jpeg(x, 50), "resize0.5": down_up, "crop90": crop}
    if name == "h264_crf23":
        return h264(images)
    return [ops[name](image) for image in images]


def survival(marked: list[np.ndarray], payload: bytes, method: str, limit: int, scale: float = watermark.SCALE,
             h264_frames: list[np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """{attack: {found: share read, ber: mean bit-error rate}} for already marked images."""
    table = {}
    for name in ATTACKS:
        images = h264_frames if name == "h264_crf23" and h264_frames is not None else attacked(marked, name)
        errors = np.array([watermark.bit_errors(x, payload, scale, method) for x in images])
        table[name] = {"found": round(float(np.mean(errors <= limit)), 4),
                       "ber": round(float(np.mean(errors)) / (len(payload) * 8), 4)}
    return table


def psnr(marked: list[np.ndarray], clean: list[np.ndarray]) -> dict[str, float]:
    """Mean and lowest PSNR (dB, peak 255, all channels) of the marked images against the unmarked ones."""
    values = [10 * np.log10(255.0**2 / max(np.mean((m.astype(float) - c) ** 2), 1e-12)) for m, c in zip(marked, clean)]
    return {"psnr_db_mean": round(float(np.mean(values)), 2), "psnr_db_min": round(float(np.min(values)), 2)}


def per_call(fn: Callable[[], Any], repeats: int = 10) -> float:
    """Seconds per call of `fn`, after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def tiles(image: np.ndarray, size: int) -> list[np.ndarray]:
    height, width = image.shape[:2]
    return [image[i: i + size, j: j + size] for i in range(0, height - size + 1, size)
            for j in range(0, width - size + 1, size)]


def real_images() -> dict[str, list[np.ndarray]]:
    """Unmarked real images by set (see the module docstring); a set whose files are absent is left out."""
    sets: dict[str, list[np.ndarray]] = {}
    olivetti = SHARED / "olivetti" / "olivettifaces.mat"
    if olivetti.is_file():
        from scipy.io import loadmat

        faces_ = loadmat(olivetti)["faces"].T.reshape(400, 64, 64).transpose(0, 2, 1)
        sets["olivetti_64_grey"] = [np.ascontiguousarray(f) for f in faces_]
    try:
        import skimage.data as samples

        names = ("astronaut", "camera", "cat", "coffee", "chelsea", "coins", "horse", "hubble_deep_field",
                 "immunohistochemistry", "moon", "page", "retina", "rocket", "text", "brick", "grass", "gravel",
                 "colorwheel", "logo", "motorcycle_left")
        photos = []
        for name in names:
            try:
                image = np.asarray(getattr(samples, name)())
            except Exception:  # noqa: BLE001  (a sample missing from this scikit-image version)
                continue
            if image.dtype == bool:
                image = image.astype(np.uint8) * 255
            if image.ndim == 3 and image.shape[-1] == 4:
                image = image[..., :3]
            photos.append(np.ascontiguousarray(image.astype(np.uint8)))
        sets["skimage_whole"] = photos
        sets["skimage_tiles_64"] = [t for p in photos for t in tiles(p, 64)][::4]
        sets["skimage_tiles_256"] = [t for p in photos for t in tiles(p, 256)]
    except ImportError:
        pass
    grid = sorted((SHARED / "grid").glob("*.mpg"))
    if grid:
        from data.faces import video_out

        sets["grid_frames"] = [f for clip in grid for k, f in enumerate(video_out.read_frames(clip)) if k % 5 == 0]
    return sets


def false_positives(sets: dict[str, list[np.ndarray]], payload: bytes, method: str, limit: int,
                    scale: float = watermark.SCALE) -> dict[str, dict[str, Any]]:
    """{set: {n, found, fewest_errors}}: how many unmarked images pass `detect`'s rule, and the closest call."""
    result = {}
    for name, images in sets.items():
        errors = np.array([watermark.bit_errors(x, payload, scale, method) for x in images])
        result[name] = {"n": len(images), "found": int(np.sum(errors <= limit)),
                        "fewest_errors": int(errors.min()) if len(errors) else None}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="synthetic faces per size (16 identities)")
    parser.add_argument("--no-sweep", action="store_true", help="only the shipped method and payload")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    start = time.time()
    limit = watermark.MAX_BIT_ERRORS
    reals = real_images()
    rows: dict[str, Any] = {}
    unmarked: dict[str, list[np.ndarray]] = {}
    for size in SIZES:
        clean = faces(size, args.n)
        unmarked[f"synthetic_{size}"] = clean
        marked = [watermark.embed(x) for x in clean]
        rows[str(size)] = {"n": len(clean), **psnr(marked, clean),
                           "survival": survival(marked, watermark.PAYLOAD, watermark.METHOD, limit,
                                                h264_frames=h264(clean, mark=True))}
    fp = false_positives({**unmarked, **reals}, watermark.PAYLOAD, watermark.METHOD, limit)
    frame = np.random.default_rng(0).integers(0, 256, (288, 360, 3), np.uint8)
    timing = {"embed_ms_360x288": round(1000 * per_call(lambda: watermark.embed(frame)), 1),
              "detect_ms_360x288": round(1000 * per_call(lambda: watermark.detect(frame)), 1)}
    sweep: dict[str, Any] = {}
    if not args.no_sweep:
        for method, bits, scale in itertools.product(SWEEP_METHODS, SWEEP_BITS, SWEEP_SCALES):
            payload, t = payload_of(bits), threshold(bits)
            key = f"{method}/{bits}bit/scale{scale:g}"
            sweep[key] = {"threshold": t}
            for size in SIZES:
                clean = unmarked[f"synthetic_{size}"]
                marked = [watermark.embed(x, payload, scale, method) for x in clean]
                sweep[key][str(size)] = {**psnr(marked, clean), **survival(marked, payload, method, t, scale)}
            found = false_positives({**unmarked, **reals}, payload, method, t, scale)
            sweep[key]["false_positives"] = {
                "found": sum(v["found"] for v in found.values()), "n": sum(v["n"] for v in found.values()),
                "fewest_errors": min(v["fewest_errors"] for v in found.values() if v["fewest_errors"] is not None)}
            print(key, sweep[key], flush=True)
    emit({"benchmark": "watermark_survival", "machine": machine(), "method": watermark.describe(),
          "protocol": __doc__.split("\n\n", 2)[2].strip(), "threshold": limit,
          "payload_bits": len(watermark.PAYLOAD) * 8,
          "random_bits_false_positive": sum(math.comb(len(watermark.PAYLOAD) * 8, k) for k in range(limit + 1))
          / 2.0 ** (len(watermark.PAYLOAD) * 8),
          "capacity_blocks": {str(s): watermark.capacity_blocks((s, s)) for s in SIZES},
          "sizes": rows, "false_positives": fp, "timing": timing, "sweep": sweep,
          "seconds": round(time.time() - start, 1)},
         args.json)


if __name__ == "__main__":
    entry(main)
