"""Merging swapped faces into frames (data.faces.merge): exact background, mask units, colour matching.

The references are independent of the module: a face's region in the frame is the hull polygon mapped
by the inverse alignment computed here with np.linalg.inv and rasterised with cv2.fillPoly; mask edges
are measured against the documented kernel sizes; colour statistics against the transfers' formulas.
"""
import hashlib
import json
import pathlib
import subprocess

import chex
import cv2
import jax
import numpy as np
import pytest
from PIL import Image
from swap_stubs import IdentitySwap, WhiteSwap, export_stub

from data import augment, provenance
from data.faces import merge, video_out
from train import merge as merge_cli
from zoo.errors import ConfigError

S = 64


class Face:
    """A face as the merge needs it, built from a matrix and a crop-space hull polygon."""

    def __init__(self, frame: np.ndarray, matrix: np.ndarray, polygon: np.ndarray, size: int = S):
        self.matrix = matrix
        self.image = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
        self.mask = np.zeros((size, size, 1), np.uint8)
        cv2.fillPoly(self.mask, [np.round(polygon * 16).astype(np.int32)], 255, shift=4)
        self.polygon = polygon


def similarity(centre, scale: float, angle: float, size: int = S) -> np.ndarray:
    """Frame -> crop: rotate by `angle`, scale by `scale` (crop px per frame px), `centre` to the crop's centre."""
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    matrix = np.array([[c, -s, 0.0], [s, c, 0.0]])
    matrix[:, 2] = (size - 1) / 2 - matrix[:, :2] @ np.asarray(centre, float)
    return matrix


def smooth_frame(rng, height=240, width=320) -> np.ndarray:
    """A frame with structure at every scale but no saturated pixels: noise blurred, then scaled into 30..220."""
    noise = rng.random((height // 8, width // 8, 3)).astype(np.float32)
    image = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    image = (image - image.min()) / (image.max() - image.min())
    return np.rint(30 + 190 * image).astype(np.uint8)


def face_polygon(size: int = S) -> np.ndarray:
    """An irregular convex face outline in crop pixels, touching nothing."""
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    return np.stack([size / 2 + 0.30 * size * np.cos(t), size / 2 + 0.36 * size * np.sin(t) + 2], axis=1)


def polygon_in_frame(face: Face, shape) -> np.ndarray:
    """The hull polygon mapped into the frame by the inverse alignment (np.linalg.inv), rasterised: bool [H, W]."""
    forward = np.vstack([face.matrix, [0, 0, 1]])
    points = np.c_[face.polygon, np.ones(len(face.polygon))] @ np.linalg.inv(forward).T
    region = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(region, [np.round(points[:, :2] * 16).astype(np.int32)], 1, shift=4)
    return region.astype(bool)


def grown(region: np.ndarray, pixels: float) -> np.ndarray:
    """`region` dilated (pixels > 0) or eroded (pixels < 0) by a disk of that radius in frame pixels."""
    radius = int(np.ceil(abs(pixels)))
    if radius == 0:
        return region
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    op = cv2.dilate if pixels > 0 else cv2.erode
    return op(region.astype(np.uint8), disk).astype(bool)


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    frame = smooth_frame(rng)
    face = Face(frame, similarity((150, 110), 0.45, 0.3), face_polygon())
    swapped = rng.random((1, S, S, 3)).astype(np.float32)
    return frame, face, swapped


@pytest.mark.parametrize("blend", merge.BLEND_MODES)
@pytest.mark.parametrize("erode, blur", [(0, 0), (24, 40), (-40, 16)])
def test_pixels_outside_the_dilated_mask_are_the_input_bytes(scene, blend, erode, blur):
    frame, face, swapped = scene
    options = merge.MergeOptions(mask="hull", erode=erode, blur=blur, color="none", blend=blend)
    merged, mask = merge.merge_frame(frame, [face], swapped, np.ones((1, S, S, 1), np.float32), options)
    chex.assert_shape(mask, frame.shape[:2])
    assert merged.dtype == np.uint8 and merged.shape == frame.shape
    # Documented reach of the mask beyond the hull: a dilation moves the edge -erode/2 sub-res px, the blur
    # fades over blur/2 more; one unit is 1 / (4 s) frame px. Slack: 3 crop px (1 / s frame px each) for the
    # hull's rasterisation in the crop (fillPoly draws the outline; measured 1.9 px with upsampling, 2.6 with
    # a dilation) and 2 frame px for the warp's bilinear sampling and the reference's own rasterisation.
    unit = 1 / (merge.MASK_SUBRES * merge.crop_scale(face.matrix))
    hull = polygon_in_frame(face, frame.shape)
    slack = 3 * merge.MASK_SUBRES * unit + 2
    outside = ~grown(hull, (max(-erode, 0) / 2 + blur / 2) * unit + slack)
    np.testing.assert_array_equal(merged[outside], frame[outside])
    np.testing.assert_array_equal(merged[mask == 0], frame[mask == 0])
    assert (mask[outside] == 0).all()
    # ...and the face did go in: well inside the hull (past erosion and fade) nearly every pixel changed.
    core = grown(hull, -((max(erode, 0) / 2 + blur / 2) * unit + slack))
    assert core.sum() > 500
    assert (merged[core] != frame[core]).any(axis=-1).mean() > 0.95


def test_a_frame_without_faces_comes_back_unchanged(scene):
    frame, _, _ = scene
    merged, mask = merge.merge_frame(frame, [], np.zeros((0, S, S, 3)), np.zeros((0, S, S, 1)), merge.MergeOptions())
    np.testing.assert_array_equal(merged, frame)
    assert not mask.any()


def test_merging_the_destination_face_back_reproduces_the_frame(scene):
    """An identity swap, at a crop as fine as the frame: only bilinear resampling error remains."""
    frame, _, _ = scene
    face = Face(frame, similarity((150, 110), 1.0, 0.3), face_polygon())
    swapped = face.image[None].astype(np.float32) / 255
    options = merge.MergeOptions(mask="hull", blur=16, color="none")
    merged, mask = merge.merge_frame(frame, [face], swapped, np.ones((1, S, S, 1), np.float32), options)
    inside = mask > 0.5
    assert inside.sum() > 1000
    error = merged[inside].astype(float) - frame[inside]
    psnr = 10 * np.log10(255**2 / np.mean(error**2))
    assert psnr > 35, psnr


def test_two_faces_are_both_merged_and_the_mask_is_their_union(scene):
    frame, face, swapped = scene
    other = Face(frame, similarity((260, 170), 0.8, -0.2), face_polygon())
    options = merge.MergeOptions(mask="hull", color="none")
    both, mask = merge.merge_frame(frame, [face, other], np.concatenate([swapped, swapped]),
                                   np.ones((2, S, S, 1), np.float32), options)
    _, first = merge.merge_frame(frame, [face], swapped, np.ones((1, S, S, 1), np.float32), options)
    _, second = merge.merge_frame(frame, [other], swapped, np.ones((1, S, S, 1), np.float32), options)
    np.testing.assert_array_equal(mask, np.maximum(first, second))
    for region in (first > 0.99, second > 0.99):
        assert (both[region] != frame[region]).any(axis=-1).mean() > 0.95


def test_mask_modes_pick_the_predicted_mask_the_hull_or_their_product():
    rng = np.random.default_rng(1)
    predicted = rng.random((S, S, 1)).astype(np.float32)
    hull = (rng.random((S, S, 1)) > 0.5).astype(np.uint8) * 255
    np.testing.assert_allclose(merge.face_mask(predicted, hull, "predicted"), predicted[..., 0])
    np.testing.assert_allclose(merge.face_mask(predicted, hull, "hull"), hull[..., 0] / 255)
    np.testing.assert_allclose(merge.face_mask(predicted, hull, "intersect"), predicted[..., 0] * (hull[..., 0] > 0))


def _radius(mask: np.ndarray) -> float:
    """Radius of a disk from the area where the mask is at least 0.5."""
    return float(np.sqrt((mask >= 0.5).sum() / np.pi))


@pytest.mark.parametrize("erode", [8, 40, -24])
def test_erode_moves_the_edge_by_half_its_kernel_at_four_times_the_crop(erode):
    disk = np.zeros((S, S), np.float32)
    cv2.circle(disk, (S // 2, S // 2), 18, 1.0, -1)
    base = _radius(merge.blend_mask(disk))
    eroded = _radius(merge.blend_mask(disk, erode=erode))
    # An elliptical kernel `erode` px wide: the edge moves erode / 2 (the kernel's radius) at the sub-resolution.
    assert eroded == pytest.approx(base - erode / 2, abs=1.0)


def test_blur_is_a_gaussian_of_the_given_kernel_width():
    half = np.zeros((S, S), np.float32)
    half[:, : S // 2] = 1
    blur = 41
    profile = merge.blend_mask(half, blur=blur)[S * 2, :]
    # OpenCV's sigma for a k-tap kernel, plus the bilinear 4x upsampling's ramp (uniform, width 4: var 4/3).
    sigma = np.hypot(0.3 * ((blur - 1) / 2 - 1) + 0.8, np.sqrt(4 / 3))
    x = np.arange(profile.size)
    ramp = (profile > 1e-4) & (profile < 1 - 1e-4) & (np.abs(x - 2 * S) < 60)  # the falling edge, inverted
    width = np.interp(0.1, profile[ramp][::-1], x[ramp][::-1]) - np.interp(0.9, profile[ramp][::-1], x[ramp][::-1])
    assert width == pytest.approx(2 * 1.2816 * sigma, rel=0.08)
    assert profile[0] < 1e-2, "the fade must end inside the crop, not be cut at its edge"


def test_scale_matrix_keeps_pixel_centres():
    """A crop sampled at 4x through scale_matrix, area-averaged back, equals the plain crop; a naive 4*M does not."""
    frame = smooth_frame(np.random.default_rng(2)).astype(np.float32)
    matrix = similarity((150, 110), 0.9, 0.1)
    plain = cv2.warpAffine(frame, matrix, (S, S), flags=cv2.INTER_LINEAR)

    def error(big_matrix):
        big = cv2.warpAffine(frame, big_matrix, (4 * S, 4 * S), flags=cv2.INTER_LINEAR)
        return np.abs(cv2.resize(big, (S, S), interpolation=cv2.INTER_AREA) - plain)[4:-4, 4:-4].mean()

    assert error(merge.scale_matrix(matrix, 4)) < 0.5 * error(4 * matrix)
    assert merge.crop_scale(matrix) == pytest.approx(0.9)


def _lab_mean(image, region):
    return augment.srgb_to_lab(np.asarray(image, np.float64)[region] / (255 if image.dtype == np.uint8 else 1)).mean(0)


@pytest.fixture
def tinted():
    """A destination crop and a swapped face of the same content with another colour cast."""
    rng = np.random.default_rng(3)
    target = smooth_frame(rng, S, S)
    face = np.clip(target.astype(np.float32) / 255 * np.array([0.7, 0.9, 1.2]) + [0.1, -0.05, 0.0], 0, 1)
    region = np.zeros((S, S), bool)
    region[10:54, 14:50] = True
    return face.astype(np.float32), target, region


def test_rct_sets_the_face_lab_mean_to_the_destination(tinted):
    face, target, region = tinted
    out = merge.match_color(face, target, region, "rct")
    assert np.abs(_lab_mean(face, region) - _lab_mean(target, region)).max() > 5
    np.testing.assert_allclose(_lab_mean(out, region), _lab_mean(target, region), atol=0.5)


def test_lct_sets_the_face_rgb_mean_to_the_destination(tinted):
    face, target, region = tinted
    out = merge.match_color(face, target, region, "lct")
    np.testing.assert_allclose(out[region].mean(0), target[region].mean(0) / 255, atol=2e-3)


def test_sot_moves_the_mean_towards_the_destination_and_none_keeps_the_face(tinted):
    face, target, region = tinted
    before = np.abs(face[region].mean(0) - target[region].mean(0) / 255).sum()
    after = np.abs(merge.match_color(face, target, region, "sot")[region].mean(0) - target[region].mean(0) / 255)
    assert after.sum() < 0.3 * before
    np.testing.assert_array_equal(merge.match_color(face, target, region, "none"), face)


def test_colour_statistics_come_from_inside_the_face_only(tinted):
    """Pixels outside the region (here saturated red) must not pull the match."""
    face, target, region = tinted
    target = target.copy()
    target[~region] = (255, 0, 0)
    out = merge.match_color(face, target, region, "lct")
    np.testing.assert_allclose(out[region].mean(0), target[region].mean(0) / 255, atol=2e-3)


@pytest.mark.parametrize("field, value", [("mask", "xseg"), ("color", "idt"), ("blend", "poisson"),
                                          ("erode", 401), ("blur", -1)])
def test_bad_options_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=field):
        merge.MergeOptions(**{field: value})


# ------------------------------------------------------------------------------- the command line (train.merge)
#
# An identity "swap" (returns its input and a mask of ones) exported in the zoo's format, merged through the
# real CLI in-process on GRID footage, with dlib detection (data.faces.extract.find_faces) at 128 px.


@pytest.fixture
def identity_export(tmp_path, monkeypatch) -> pathlib.Path:
    return export_stub(monkeypatch, IdentitySwap, "test_identity_swap", 128, tmp_path / "identity.safetensors")


@pytest.fixture(scope="module")
def grid_clip(shared_data, tmp_path_factory) -> pathlib.Path:
    """The first 15 frames (0.6 s) of a GRID video, near-losslessly re-encoded (crf 0), with its audio as AAC."""
    pytest.importorskip("dlib", reason="the faces extra (dlib) finds the faces to merge")
    clip = tmp_path_factory.mktemp("clip") / "clip.mp4"
    ffmpeg("-i", str(shared_data / "grid" / "bbaf2n.mpg"), "-t", "0.6", "-c:v", "libx264", "-crf", "0",
           "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip))
    return clip


def ffmpeg(*args: str) -> str:
    return subprocess.run([video_out.ffmpeg_exe(), "-v", "error", "-y", *args], check=True, capture_output=True,
                          text=True).stdout


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(float) - b) ** 2)))


def frames_of(path) -> np.ndarray:
    return np.stack(list(video_out.read_frames(path)))


def run_merge(*args: str) -> None:
    assert merge_cli.main([*args]) == 0


IDENTITY = ("--mask", "hull", "--color", "none", "--batch", "8")


def test_an_identity_swap_through_the_cli_reproduces_the_input(identity_export, grid_clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    run_merge("--export", str(identity_export), "--input", str(grid_clip), "--output", str(out), *IDENTITY)
    summary = capsys.readouterr().out
    assert "15 faces swapped, 0 frames without a face" in summary and "frames/s" in summary
    info = video_out.probe(out)
    assert (info.frames, info.fps, info.size, info.audio_codec) == (15, 25.0, (360, 288), "aac")
    copied = ["-map", "0:a:0", "-c", "copy", "-f", "md5", "-"]
    assert ffmpeg("-i", str(out), *copied) == ffmpeg("-i", str(grid_clip), *copied), "the audio must be copied"
    # The bound: what re-encoding the input unchanged at the same crf costs, less 1 dB over the frame and 2 dB
    # over the face (measured: 39.7 vs 40.2 dB and 36.5 vs 37.8 dB; a face 1 px off scores 27 dB there).
    source, merged = frames_of(grid_clip), frames_of(out)
    video_out.write_mp4(tmp_path / "same.mp4", iter(source), fps=25)
    unchanged = frames_of(tmp_path / "same.mp4")
    assert psnr(merged, source) >= psnr(unchanged, source) - 1.0
    from data.faces.dlib_models import FaceAnalyzer

    left, top, right, bottom = FaceAnalyzer().detect(source[0])[0]
    face = (slice(None), slice(top, bottom), slice(left, right))
    assert psnr(merged[face], source[face]) >= psnr(unchanged[face], source[face]) - 2.0
    # Provenance, read back: container metadata through ffmpeg, and the sidecar's hashes.
    assert info.metadata["comment"] == video_out.VIDEO_NOTICE
    assert "test_identity_swap" in info.metadata["title"]
    sidecar = json.loads((tmp_path / "out.mp4.json").read_text())
    assert sidecar["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    clip_sha256 = hashlib.sha256(grid_clip.read_bytes()).hexdigest()
    assert sidecar["Sources"] == [{"file": str(grid_clip), "sha256": clip_sha256}]
    assert sidecar["Model sha256"] == hashlib.sha256(identity_export.read_bytes()).hexdigest()
    assert (sidecar["Model"], sidecar["Faces"], sidecar["Frames without a face"]) == ("test_identity_swap", 15, [])
    assert sidecar["Merge"]["mask"] == "hull" and sidecar["Description"] == provenance.NOTICE


def test_frames_without_a_face_pass_through_and_are_counted(identity_export, grid_clip, tmp_path, capsys):
    """A folder of frames (4 of GRID, 2 plain grey) merged into a folder of PNGs."""
    folder = tmp_path / "frames"
    folder.mkdir()
    grey = np.full((288, 360, 3), 128, np.uint8)
    images = {f"f{i}": frame for i, frame in enumerate(frames_of(grid_clip)[:4])} | {"g0": grey, "g1": grey + 9}
    for name, image in images.items():
        Image.fromarray(image).save(folder / f"{name}.png")
    out = tmp_path / "merged"
    run_merge("--export", str(identity_export), "--input", str(folder), "--output", str(out), *IDENTITY)
    assert "4 faces swapped, 2 frames without a face" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.png" for name in images)
    # Every frame written carries the invisible watermark (data/watermark.py, ~42 dB PSNR): a frame without a face
    # is the input with the mark, bit for bit; an identity swap is the marked input to 45 dB (47 measured).
    for name, image in images.items():
        merged = np.asarray(Image.open(out / f"{name}.png"))
        if name.startswith("g"):
            np.testing.assert_array_equal(merged, provenance.png_pixels(image))
        else:
            assert psnr(merged, provenance.png_pixels(image)) > 45 and (merged != image).any()
    chunks = provenance.read_provenance(out / "f0.png")
    assert chunks["Description"] == provenance.NOTICE and chunks["Model"] == "test_identity_swap"
    assert chunks["Model sha256"] == hashlib.sha256(identity_export.read_bytes()).hexdigest()
    assert json.loads(chunks["Sources"])[0]["sha256"] == hashlib.sha256((folder / "f0.png").read_bytes()).hexdigest()


def test_an_extraction_is_reused_with_the_same_result(identity_export, grid_clip, tmp_path):
    """--extraction reads the alignment the extractor saved: the frames merge exactly as with detection."""
    from data.faces import extract

    extract.extract(grid_clip, tmp_path / "faces", extract.Options(size=128), workers=1, progress=False)
    run_merge("--export", str(identity_export), "--input", str(grid_clip), "--output", str(tmp_path / "a"),
              *IDENTITY)
    run_merge("--export", str(identity_export), "--input", str(grid_clip), "--output", str(tmp_path / "b"),
              "--extraction", str(tmp_path / "faces"), *IDENTITY)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir()) and len(names) == 15
    for name in names:
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / name)),
                                      np.asarray(Image.open(tmp_path / "b" / name)))


def test_each_merged_frame_comes_with_the_mask_it_was_blended_with(grid_clip):
    """merged_frames_with_masks pairs every frame with its own blend mask, faceless frames inside a batch too."""
    from data.faces.dlib_models import FaceAnalyzer

    grid = frames_of(grid_clip)
    grey = np.full_like(grid[0], 128)
    frames = [grid[0], grey, grid[5], grid[10], grey, grid[14]]
    module = WhiteSwap(resolution=128)
    model = merge_cli.SwapModel(module, module.init(jax.random.key(0), *module.example_inputs())["params"],
                                "white", {}, "-", "test")
    footage = merge_cli.Footage("folder", iter(frames), [f"f{i}" for i in range(len(frames))], 25.0, None,
                                [pathlib.Path("frames")], [(f"f{i}.png", 0) for i in range(len(frames))])
    stats = merge_cli.Stats()
    options = merge.MergeOptions(mask="hull", color="none", blur=20)
    merged = list(merge_cli.merged_frames_with_masks(footage, merge_cli.detector_lookup("whole_face", 128, False),
                                                     model, "b2a", options, 4, stats))
    assert len(merged) == len(frames) and stats.no_face == [1, 4] and stats.faces == 4
    analyzer = FaceAnalyzer()
    for i, (frame, (out, mask)) in enumerate(zip(frames, merged)):
        chex.assert_shape(mask, frame.shape[:2])
        assert mask.dtype == np.float32 and 0 <= mask.min() and mask.max() <= 1
        # alpha blending plain white by this mask: 0 keeps the input byte, 1 gives 255, between mixes linearly
        expected = np.where(mask[..., None] > 0, np.rint(frame + mask[..., None] * (255.0 - frame)), frame)
        np.testing.assert_array_equal(out[mask == 0], frame[mask == 0])
        assert np.abs(out.astype(float) - expected).max() <= 1, i  # the warped white face is 255 up to float error
        if i in (1, 4):
            assert not mask.any()
        else:  # dlib's own box around the face: its centre blended fully, the frame's corners untouched
            left, top, right, bottom = analyzer.detect(frame)[0]
            assert mask[(top + bottom) // 2, (left + right) // 2] == 1.0 and 0.0 < mask.mean() < 0.5
            assert mask[0, 0] == mask[-1, -1] == 0.0
    # each frame's mask is its own: the face moves between frames 0, 5, 10 and 14, so the masks differ
    assert all((merged[a].mask != merged[b].mask).any() for a, b in ((0, 2), (2, 3), (3, 5)))


# ------------------------------------------------------------------------------------------ bad input


def assert_refused(capsys, args, *fragments):
    """The CLI exits with status 2 and one line naming each fragment, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        merge_cli.main(list(args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_an_export_that_is_not_a_swap_model_is_refused(grid_clip, tmp_path, capsys):
    import zoo
    from zoo import pretrained

    fields = {"image_shape": [8, 8, 1], "latent_dim": 2, "hidden": [4]}
    module = zoo.create_model("vae_mlp", **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    params = module.init(jax.random.key(0), *module.example_inputs())["params"]
    export = pretrained.export(tmp_path / "vae.safetensors", "vae_mlp", fields, params)
    assert_refused(capsys, ["--export", str(export), "--input", str(grid_clip), "--output", str(tmp_path / "o.mp4")],
                   "weights error", "vae.safetensors", "not a face-swap model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae.safetensors"]


def test_an_extraction_at_another_resolution_is_refused(identity_export, grid_clip, tmp_path, capsys):
    faces = tmp_path / "faces"
    faces.mkdir()
    record = {"file": "clip_000000_0.png", "source": str(grid_clip), "frame": 0, "face": 0, "face_type": "whole_face",
              "size": 256, "matrix": [[1, 0, 0], [0, 1, 0]], "landmarks": [[0, 0]] * 68,
              "landmarks_aligned": [[0, 0]] * 68, "box": [0, 0, 1, 1]}
    (faces / "index.jsonl").write_text(json.dumps(record) + "\n")
    assert_refused(capsys, ["--export", str(identity_export), "--input", str(grid_clip), "--output",
                            str(tmp_path / "o.mp4"), "--extraction", str(faces)],
                   "data error", "256 px faces but the model takes 128 px", "--size 128")
    assert not (tmp_path / "o.mp4").exists()


def test_a_truncated_video_is_refused(identity_export, shared_data, tmp_path, capsys):
    cut = tmp_path / "cut.mpg"
    cut.write_bytes((shared_data / "grid" / "bbaf2n.mpg").read_bytes()[:200_000])
    assert_refused(capsys, ["--export", str(identity_export), "--input", str(cut), "--output", str(tmp_path / "o.mp4"),
                            *IDENTITY], "data error", "cut.mpg", "truncated or damaged")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mpg", "identity.safetensors"]


def test_footage_without_faces_is_refused(identity_export, tmp_path, capsys):
    pytest.importorskip("dlib", reason="the faces extra (dlib) looks for the faces")
    empty = tmp_path / "wall.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=160x120:rate=25", "-frames:v", "10", "-pix_fmt", "yuv420p",
           str(empty))
    assert_refused(capsys, ["--export", str(identity_export), "--input", str(empty), "--output",
                            str(tmp_path / "o.mp4")], "data error", "no face found in any of the 10 frames", "wall.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.safetensors", "wall.mp4"]


def test_an_output_in_a_missing_folder_is_refused(identity_export, tmp_path, capsys):
    assert_refused(capsys, ["--export", str(identity_export), "--input", str(tmp_path), "--output",
                            str(tmp_path / "missing" / "o.mp4")], "missing", "does not exist; create it")
    assert not (tmp_path / "missing").exists()


def test_merge_aligns_as_the_export_records_and_refuses_a_contradicting_face_type(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from train.export import trained_face_types
    from zoo import pretrained, registry

    monkeypatch.setitem(registry._MODELS, "test_identity_swap", IdentitySwap)
    module = IdentitySwap(resolution=64)
    params = module.init(jax.random.key(0), *module.example_inputs())["params"]
    path = pretrained.export(tmp_path / "m.safetensors", "test_identity_swap", {"resolution": 64}, params,
                             metadata={"face_type": "full_face"})
    model = merge_cli.load_swap_model(export=str(path))
    assert model.face_type == "full_face"
    assert merge_cli.wanted_face_type(None, model) == "full_face"
    assert merge_cli.wanted_face_type("full_face", model) == "full_face"
    with pytest.raises(ConfigError, match="--face-type whole_face, but .* was trained on full_face faces"):
        merge_cli.wanted_face_type("whole_face", model)
    unrecorded = merge_cli.load_swap_model(export=str(export_stub(monkeypatch, IdentitySwap, "test_identity_swap",
                                                                  64, tmp_path / "u.safetensors")))
    assert merge_cli.wanted_face_type(None, unrecorded) is None and unrecorded.face_type is None
    # What an export records: the face type of the aligned sets under pairs and resizing, one or none.
    aligned = lambda t: SimpleNamespace(face_type=t)  # noqa: E731
    pair = SimpleNamespace(a=SimpleNamespace(source=aligned("head")), b=aligned("head"))
    assert trained_face_types(pair) == ["head"]
    assert trained_face_types(SimpleNamespace(a=aligned("head"), b=aligned("full_face"))) == ["full_face", "head"]
    assert trained_face_types(SimpleNamespace(a=SimpleNamespace(), b=SimpleNamespace())) == []
