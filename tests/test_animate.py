"""Animation (zoo.animate, python -m train.animate): FOMM's relative motion, hull areas, best frame, the CLI end to end."""
import functools
import hashlib
import json
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy.spatial import ConvexHull

from data.faces import video_out
from train import animate as animate_cli
from zoo import animate, create_model, pretrained

# 32 px models that init and run in seconds; the published code at tiny widths.
TINY = {
    "fomm": dict(image_shape=(32, 32, 3), num_kp=4, kp_block_expansion=4, kp_max_features=16, kp_num_blocks=2,
                 kp_padding=3, dm_block_expansion=4, dm_max_features=16, dm_num_blocks=2, gen_block_expansion=4,
                 gen_max_features=16, gen_num_bottleneck_blocks=1),
    "tpsmm": dict(image_shape=(32, 32, 3), num_kp=2, kp_widths=(4, 8), kp_stages=(1, 1), dm_block_expansion=4,
                  dm_max_features=16, dm_num_blocks=2, dm_scale_factor=0.5, gen_block_expansion=4,
                  gen_max_features=16, gen_num_down_blocks=2, gen_num_bottleneck_blocks=1),
}


@functools.cache
def tiny(name):
    """An untrained tiny model and its variables (params and batch_stats), made to show what it is given.

    At init the generator's output is grey within a few levels whatever the motion, fomm's Jacobians and
    tpsmm's background affine are exactly the identity: comparisons of outputs would test nothing. The
    final conv's kernel is scaled up (output std ~65 levels) and the Jacobian and background heads get
    random kernels.
    """
    model = create_model(name, **TINY[name])
    variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), *model.example_inputs())
    variables = jax.tree.map(np.asarray, variables)
    final = variables["params"]["generator"]["final"]
    final["kernel"] = final["kernel"] * 30
    head = variables["params"]["kp_detector"]["jacobian"] if name == "fomm" else variables["params"]["bg_predictor"]["fc"]
    head["kernel"] = np.random.default_rng(0).normal(0, 0.02, head["kernel"].shape).astype(np.float32)
    return model, variables


@functools.cache
def compiled(model, method):
    """model.apply(..., method=method), compiled once per model and method."""
    return jax.jit(functools.partial(model.apply, method=method))


def frames(n, shape=(32, 32, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def as_uint8(x):
    return np.clip(np.rint(np.asarray(x, np.float64) * 255), 0, 255).astype(np.uint8)


def assert_images_close(got, want):
    """uint8 images equal up to a rounding step (the batched program and the reference differ in float order)."""
    chex.assert_equal_shape([got, want])
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())


# ---------------------------------------------------------------------------------------------------- hull area


def hull_cases():
    rng = np.random.default_rng(1)
    grid = np.stack(np.meshgrid(np.arange(4.0), np.arange(3.0)), -1).reshape(-1, 2)  # collinear points on edges
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5], [1, 0], [0, 0]], float)  # inside + repeats
    return [rng.uniform(-1, 1, (10, 2)), rng.normal(0, 0.3, (50, 2)), rng.uniform(-1, 1, (3, 2)), grid * 0.2 - 0.3,
            square, rng.uniform(-1, 1, (10, 2)) * [1.0, 0.01]]


@pytest.mark.parametrize("points", hull_cases(), ids=["10", "50", "triangle", "grid", "square+repeats", "thin"])
def test_hull_area_is_scipys_convex_hull_volume(points):
    want = ConvexHull(points).volume
    area = jax.jit(animate.hull_area)(np.stack([points, points[::-1] * [1, -1]]))  # also reordered, mirrored
    np.testing.assert_allclose(area, [want, want], rtol=1e-5)  # under jit: XLA contracts the products into FMAs


def test_hull_area_of_points_on_a_line_is_zero_and_batches_map():
    line = np.stack([np.linspace(-1, 1, 7), np.linspace(0.5, -0.2, 7)], -1)
    assert float(animate.hull_area(line)) == pytest.approx(0.0, abs=1e-7)
    batch = np.random.default_rng(9).uniform(-1, 1, (2, 3, 10, 2))
    got = jax.jit(animate.hull_area)(batch)
    chex.assert_shape(got, (2, 3))
    np.testing.assert_allclose(got, [[ConvexHull(p).volume for p in row] for row in batch], rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- relative keypoints


def random_kp(rng, batch=3, n=10):
    return {"value": rng.uniform(-0.8, 0.8, (batch, n, 2)).astype(np.float32),
            "jacobian": (np.eye(2) + rng.normal(0, 0.3, (batch, n, 2, 2))).astype(np.float32)}


@pytest.mark.parametrize("adapt_scale", [False, True])
def test_relative_keypoints_follow_fomms_formula(adapt_scale):
    rng = np.random.default_rng(2)
    src, drv, init = random_kp(rng), random_kp(rng), random_kp(rng)
    got = jax.jit(functools.partial(animate.relative_keypoints, adapt_scale=adapt_scale))(src, drv, init)
    for b in range(3):
        scale = np.sqrt(ConvexHull(src["value"][b]).volume / ConvexHull(init["value"][b]).volume) if adapt_scale else 1
        value = src["value"][b] + (drv["value"][b] - init["value"][b]) * scale
        jac = drv["jacobian"][b] @ np.linalg.inv(init["jacobian"][b]) @ src["jacobian"][b]
        np.testing.assert_allclose(got["value"][b], value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["jacobian"][b], jac, rtol=1e-4, atol=1e-5)
    if adapt_scale:  # the scale is not 1 here, so the test can tell the two apart
        assert not np.allclose(got["value"], src["value"] + drv["value"] - init["value"], atol=1e-3)


def test_relative_keypoints_flags_and_tps_points():
    rng = np.random.default_rng(3)
    src, drv, init = random_kp(rng), random_kp(rng), random_kp(rng)
    absolute = animate.relative_keypoints(src, drv, init, adapt_scale=True, use_relative_movement=False)
    np.testing.assert_array_equal(absolute["value"], drv["value"])
    np.testing.assert_array_equal(absolute["jacobian"], drv["jacobian"])
    moved_only = animate.relative_keypoints(src, drv, init, adapt_scale=False, use_relative_jacobian=False)
    np.testing.assert_array_equal(moved_only["jacobian"], drv["jacobian"])
    np.testing.assert_allclose(moved_only["value"], src["value"] + drv["value"] - init["value"], atol=1e-6)
    tps = {k: {"value": kp["value"]} for k, kp in (("s", src), ("d", drv), ("i", init))}  # no Jacobians (tpsmm)
    out = animate.relative_keypoints(tps["s"], tps["d"], tps["i"], adapt_scale=False)
    assert set(out) == {"value"}
    one = {"value": src["value"][:1]}  # a batch-1 source broadcasts over the driving batch
    np.testing.assert_allclose(animate.relative_keypoints(one, tps["d"], tps["i"], adapt_scale=False)["value"],
                               src["value"][:1] + drv["value"] - init["value"], atol=1e-6)


# ---------------------------------------------------------------------------------------------------- animate_clip


def reference(model, variables, source, driving_frame, kp_driving=None):
    """The model called directly on one frame: keypoints of both, then `animate` (absolute mode), uint8."""
    src, drv = jnp.asarray(source[None] / 255.0, jnp.float32), jnp.asarray(driving_frame[None] / 255.0, jnp.float32)
    kp_s = compiled(model, "keypoints")(variables, src)
    kp_d = compiled(model, "keypoints")(variables, drv) if kp_driving is None else kp_driving
    strip = lambda kp: {k: v for k, v in kp.items() if k != "heatmap"}
    out = compiled(model, "animate")(variables, src, strip(kp_s), strip(kp_d))
    return as_uint8(out["prediction"][0]), kp_s


@pytest.mark.slow  # 7-16 s: the default step stays near 15 min on 2 cores
def test_absolute_mode_of_fomm_is_the_model_called_directly():
    model, variables = tiny("fomm")
    source, driving = frames(1, seed=1)[0], frames(5, seed=2)
    got = animate.animate_clip(model, variables, source, driving, mode="absolute", batch_size=2)  # 2 + 2 + 1 padded
    assert got.dtype == np.uint8 and got.shape == driving.shape
    for t in range(5):
        assert_images_close(got[t], reference(model, variables, source, driving[t])[0])
    with pytest.raises(AssertionError):  # another frame's animation is not that close: the test can fail
        assert_images_close(got[0], got[1])


def test_relative_mode_with_a_still_clip_animates_the_source_by_its_own_keypoints():
    model, variables = tiny("fomm")
    source, still = frames(1, seed=3)[0], np.repeat(frames(1, seed=4), 3, axis=0)
    got = animate.animate_clip(model, variables, source, still, mode="relative", adapt_scale=True, batch_size=2)
    _, kp_s = reference(model, variables, source, source)
    itself, _ = reference(model, variables, source, source, kp_driving=kp_s)
    for t in range(3):
        assert_images_close(got[t], itself)
    absolute = animate.animate_clip(model, variables, source, still, mode="absolute", batch_size=2)
    with pytest.raises(AssertionError):  # the driving frame's own keypoints give another image
        assert_images_close(absolute[0], itself)


@pytest.mark.slow  # 35 s here: four compilations of the two ResNets and the TPS solve
def test_tpsmm_absolute_mode_is_its_forward_pass_with_the_background_and_relative_leaves_it_out():
    model, variables = tiny("tpsmm")
    source, driving = frames(1, seed=5)[0], frames(3, seed=6)
    forward = jax.jit(model.apply, static_argnames="use_background")
    unit = lambda x: jnp.asarray(x / 255.0, jnp.float32)
    sources = unit(np.repeat(source[None], 3, 0))
    got = animate.animate_clip(model, variables, source, driving, mode="absolute", batch_size=3)
    want = forward(variables, sources, unit(driving))  # keypoints of both, background affine, animate
    assert not np.allclose(want["bg_param"], np.eye(3), atol=1e-3), "the background affine is in play"
    for t in range(3):
        assert_images_close(got[t], as_uint8(want["prediction"][t]))
    # A still clip in relative mode: the source animated by its own keypoints, no background motion.
    relative = animate.animate_clip(model, variables, source, np.repeat(driving[:1], 3, 0), batch_size=3)
    itself = as_uint8(forward(variables, sources, sources, use_background=False)["prediction"])
    for t in range(3):
        assert_images_close(relative[t], itself[t])


def test_animate_clip_refuses_wrong_inputs():
    model, variables = tiny("fomm")
    from zoo.errors import ConfigError, DataError

    with pytest.raises(DataError, match="uint8 \\[T, 32, 32, 3\\]"):
        animate.animate_clip(model, variables, frames(1)[0], frames(2, shape=(16, 16, 3)))
    with pytest.raises(DataError, match="uint8"):
        animate.animate_clip(model, variables, frames(1)[0].astype(np.float32), frames(2))
    with pytest.raises(ConfigError, match="relative, absolute"):
        animate.animate_clip(model, variables, frames(1)[0], frames(2), mode="standard")
    with pytest.raises(ConfigError, match="background predictor"):
        animate.animate_clip(model, variables, frames(1)[0], frames(2), background=True)


# ---------------------------------------------------------------------------------------------------- best frame


def test_find_best_frame_picks_the_planted_frame_and_skips_frames_without_landmarks():
    rng = np.random.default_rng(7)
    source = rng.uniform(0, 200, (68, 2))
    driving = source + rng.normal(0, 12, (8, 68, 2))
    driving[5] = source * 2.5 + [40, -13] + rng.normal(0, 0.01, (68, 2))  # same shape, moved and scaled
    driving[2] = np.nan  # no face found there

    def fomm_normalised(kp):  # FOMM's demo: centre, divide by the sqrt of scipy's hull area
        kp = kp - kp.mean(axis=0)
        return kp / np.sqrt(ConvexHull(kp).volume)

    distances = [np.inf if t == 2 else np.sum((fomm_normalised(d) - fomm_normalised(source)) ** 2)
                 for t, d in enumerate(driving)]
    assert animate.find_best_frame(source, driving) == int(np.argmin(distances)) == 5
    np.testing.assert_allclose(animate.normalise_landmarks(driving[5]), fomm_normalised(driving[5]), rtol=1e-5,
                               atol=1e-6)


# ---------------------------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """The tiny fomm, untrained, written as an export (params and batch_stats) the way train.export writes one."""
    model, variables = tiny("fomm")
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY["fomm"].items()}
    path = tmp_path_factory.mktemp("export") / "fomm.safetensors"
    return pretrained.export(path, "fomm", fields, variables["params"], metadata={"step": 0},
                             collections={"batch_stats": variables["batch_stats"]})


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """6 noise frames of 48x40 px as an MP4 (not the model's size or aspect), and frame 3 of it decoded, as a PNG."""
    video_out.ffmpeg_exe()  # what every reader calls first: imageio-ffmpeg then starts ffmpeg without a fork
    folder = tmp_path_factory.mktemp("clip")
    path = folder / "driving.mp4"
    rng = np.random.default_rng(8)
    video = np.repeat(np.repeat(rng.integers(0, 256, (6, 10, 12, 3), dtype=np.uint8), 4, 1), 4, 2)
    video_out.write_mp4(path, iter(video), fps=25, watermark=False, crf=0)
    decoded = np.stack(list(video_out.read_frames(path)))
    Image.fromarray(decoded[3]).save(folder / "source.png")
    return path, folder / "source.png"


def run_cli(*args):
    assert animate_cli.main([str(a) for a in args]) == 0


def test_the_cli_writes_a_watermarked_video_of_every_driving_frame(export, clip, tmp_path, capsys):
    driving, source = clip
    out = tmp_path / "out.mp4"
    run_cli("--export", export, "--source", source, "--driving", driving, "--output", out, "--batch", 4)
    assert "animated 6 frames" in capsys.readouterr().out
    info = video_out.probe(out)
    assert (info.frames, info.fps, info.size) == (6, 25.0, (256, 256))  # 32 px model, written at >= 256 px
    assert info.metadata["comment"] == video_out.VIDEO_NOTICE and "fomm" in info.metadata["title"]
    check = subprocess.run([sys.executable, "-m", "data.provenance", "check", str(out)], capture_output=True,
                           text=True, timeout=300)
    assert check.returncode == 0 and "watermark: found" in check.stdout, check.stdout + check.stderr
    sidecar = json.loads((tmp_path / "out.mp4.json").read_text())
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    assert [s["sha256"] for s in sidecar["Sources"]] == [sha(source), sha(driving)]
    assert (sidecar["Model"], sidecar["Model sha256"]) == ("fomm", sha(export))
    assert sidecar["Animate"]["mode"] == "relative" and sidecar["sha256"] == sha(out)


@pytest.mark.parametrize("by", ["model keypoints", "dlib"])
def test_find_best_frame_anchors_on_the_frame_the_source_was_cut_from(export, clip, tmp_path, capsys, monkeypatch,
                                                                      by):
    if by == "dlib":
        pytest.importorskip("dlib", reason="the faces extra (dlib) places the landmarks")
    else:
        monkeypatch.setattr(animate_cli, "landmark_analyzer", lambda: None)
    driving, source = clip
    out = tmp_path / "best.mp4"
    run_cli("--export", export, "--source", source, "--driving", driving, "--output", out, "--size", 128,
            "--find-best-frame", "--batch", 4)
    printed = capsys.readouterr().out
    assert "from driving frame 3" in printed, printed
    assert ("model's keypoints" in printed) == (by != "dlib")
    assert video_out.probe(out).frames == 6
    assert json.loads((tmp_path / "best.mp4.json").read_text())["Animate"]["best_frame"] == 3


def assert_refused(capsys, args, *fragments):
    """The CLI exits with status 2 and one line naming each fragment, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        animate_cli.main([str(a) for a in args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_bad_inputs_are_refused_with_the_fix(export, clip, tmp_path, capsys):
    driving, source = clip
    out = tmp_path / "o.mp4"
    common = ["--export", export, "--output", out]
    assert_refused(capsys, [*common, "--source", tmp_path / "none.png", "--driving", driving],
                   "data error", "--source", "none.png", "does not exist")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    assert_refused(capsys, [*common, "--source", source, "--driving", text], "data error", "notes.mp4",
                   "pass a video file")
    assert_refused(capsys, [*common, "--source", text, "--driving", driving], "data error", "not a readable image")
    assert_refused(capsys, ["--export", export, "--source", source, "--driving", driving, "--output",
                            tmp_path / "o.gif"], "config error", "write an .mp4")
    assert_refused(capsys, ["--export", tmp_path / "missing.safetensors", "--source", source, "--driving", driving,
                            "--output", out], "weights error", "missing.safetensors", "python -m train.export")
    vae_fields = {"image_shape": [8, 8, 1], "latent_dim": 2, "hidden": [4]}
    vae = create_model("vae_mlp", image_shape=(8, 8, 1), latent_dim=2, hidden=(4,))
    params = vae.init(jax.random.key(0), *vae.example_inputs())["params"]
    other = pretrained.export(tmp_path / "vae.safetensors", "vae_mlp", vae_fields, params)
    assert_refused(capsys, ["--export", other, "--source", source, "--driving", driving, "--output", out],
                   "weights error", "vae.safetensors", "not a reenactment model", "configs/reenact_")
    assert not out.exists() and not (tmp_path / "o.gif").exists()
