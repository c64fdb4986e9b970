"""Video in and out of the merge (data.faces.video_out): probe, frame count, fps, size, audio, provenance, damage.

Test clips are made with the ffmpeg binary itself (testsrc2 video, a sine tone as AAC), so their facts
are known by construction; GRID's facts (75 frames, 25 fps, 360x288, MPEG-1 Layer II audio) come from
its published description and `ffmpeg -i`.
"""
import hashlib
import json
import pathlib
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from data import provenance
from data.faces import video_out
from zoo.errors import DataError, WorkdirError

GRID_CLIP = "grid/bbaf2n.mpg"


def ffmpeg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([video_out.ffmpeg_exe(), "-v", "error", "-y", *args], check=True, capture_output=True,
                          text=True)


def make_clip(path: pathlib.Path, frames: int = 12, rate: str = "30000/1001", size: str = "160x120",
              audio: bool = True) -> pathlib.Path:
    """A test clip: `frames` frames of testsrc2 at `rate`, and a 440 Hz tone in AAC as long as the video."""
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-c:a", "aac", "-shortest"]
    ffmpeg(*args, "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "10", str(path))
    return path


def audio_md5(path: pathlib.Path) -> str:
    """MD5 of the first audio stream's packets as stored (no decoding): equal iff the stream was copied."""
    return ffmpeg("-i", str(path), "-map", "0:a:0", "-c", "copy", "-f", "md5", "-").stdout.strip()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(float) - b) ** 2)))


def test_probe_reads_the_grid_facts(shared_data):
    info = video_out.probe(shared_data / GRID_CLIP)
    assert (info.frames, info.fps, info.size) == (75, 25.0, (360, 288))
    assert info.has_audio and info.audio_codec == "mp2"


def test_mp4_keeps_frames_rate_size_and_copies_aac_audio(tmp_path):
    clip = make_clip(tmp_path / "in.mp4")
    source = video_out.probe(clip)
    assert (source.frames, source.size, source.audio_codec) == (12, (160, 120), "aac")
    out = tmp_path / "out.mp4"
    written = video_out.write_mp4(out, video_out.read_frames(clip, source.frames), fps=source.fps, audio_from=clip,
                                  title="merge test")
    assert written == (out, 12, "copy")
    info = video_out.probe(out)
    assert (info.frames, info.size, info.audio_codec) == (12, (160, 120), "aac")
    assert info.fps == pytest.approx(30000 / 1001, abs=0.005)
    assert audio_md5(out) == audio_md5(clip)
    frames_in = np.stack(list(video_out.read_frames(clip)))
    frames_out = np.stack(list(video_out.read_frames(out)))
    # testsrc2's saturated colour edges lose most to 4:2:0 chroma: 34 dB measured; one frame off gives 20 dB.
    assert psnr(frames_out, frames_in) > 30
    assert psnr(frames_out[1:], frames_in[:-1]) < 25
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_grid_mp2_audio_is_reencoded_to_aac_and_everything_else_kept(shared_data, tmp_path):
    grid = shared_data / GRID_CLIP
    out = tmp_path / "grid.mp4"
    written = video_out.write_mp4(out, video_out.read_frames(grid, 75), fps=25, audio_from=grid)
    assert written.audio == "aac"
    info = video_out.probe(out)
    assert (info.frames, info.fps, info.size, info.has_audio, info.audio_codec) == (75, 25.0, (360, 288), True, "aac")


def test_provenance_is_in_the_container_and_the_sidecar(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", audio=False)
    out = tmp_path / "out.mp4"
    video_out.write_mp4(out, video_out.read_frames(clip), fps=25, title="swap of in.mp4",
                        manifest={"Source": str(clip), "Model sha256": "ab" * 32})
    meta = video_out.probe(out).metadata
    assert meta["title"] == "swap of in.mp4"
    assert meta["comment"] == video_out.VIDEO_NOTICE and "Synthetic" in meta["comment"]
    sidecar = json.loads((tmp_path / "out.mp4.json").read_text())
    assert sidecar["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert sidecar["Description"] == provenance.NOTICE
    assert (sidecar["Source"], sidecar["Model sha256"], sidecar["Frames"], sidecar["Audio"]) == (
        str(clip), "ab" * 32, 12, "none")


def test_pngs_carry_provenance_chunks(tmp_path):
    frames = [(f"f{i}", np.full((8, 10, 3), i * 20, np.uint8)) for i in range(3)]
    written = video_out.write_pngs(tmp_path / "out", frames, {"Model": "swap_df", "Source": "in.mp4"})
    assert written.frames == 3
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["f0.png", "f1.png", "f2.png"]
    chunks = provenance.read_provenance(tmp_path / "out" / "f2.png")
    assert chunks["Description"] == provenance.NOTICE and chunks["Model"] == "swap_df"
    assert chunks["Comment"] == video_out.VIDEO_NOTICE


def test_fractional_rates_are_exact():
    assert video_out.exact_fps(29.97) == Fraction(30000, 1001)
    assert video_out.exact_fps(23.98) == Fraction(24000, 1001)
    assert video_out.exact_fps(25.0) == 25
    assert video_out.exact_fps(12.5) == Fraction(25, 2)


def test_odd_sizes_are_padded_by_repeating_the_edge(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 255, (31, 45, 3), np.uint8) for i in range(4)]
    video_out.write_mp4(tmp_path / "odd.mp4", frames, fps=10)
    assert video_out.probe(tmp_path / "odd.mp4").size == (46, 32)


# ------------------------------------------------------------------------------------------- bad input


def test_a_truncated_video_is_refused_and_nothing_is_left(shared_data, tmp_path):
    truncated = tmp_path / "cut.mpg"
    truncated.write_bytes((shared_data / GRID_CLIP).read_bytes()[:200_000])
    info = video_out.probe(truncated)
    out = tmp_path / "out.mp4"
    with pytest.raises(DataError, match="cut.mpg.*truncated or damaged"):
        video_out.write_mp4(out, video_out.read_frames(truncated, info.frames), fps=25, audio_from=truncated)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mpg"]


def test_a_file_that_is_not_a_video_is_named(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 50)
    with pytest.raises(DataError, match="junk.mp4 is not a readable video"):
        video_out.probe(junk)
    with pytest.raises(DataError, match="does not exist"):
        video_out.probe(tmp_path / "missing.mp4")


def test_a_failure_while_writing_leaves_no_file(tmp_path):
    def frames():
        yield np.zeros((16, 16, 3), np.uint8)
        raise DataError("merge failed halfway")

    with pytest.raises(DataError, match="halfway"):
        video_out.write_mp4(tmp_path / "out.mp4", frames(), fps=25)
    with pytest.raises(DataError, match="halfway"):
        video_out.write_pngs(tmp_path / "pngs", ((str(i), f) for i, f in enumerate(frames())), {})
    assert list(tmp_path.iterdir()) == []


def test_an_output_in_a_missing_folder_is_refused_before_writing(tmp_path):
    with pytest.raises(WorkdirError, match="does not exist; create it"):
        video_out.write_mp4(tmp_path / "nope" / "out.mp4", [np.zeros((16, 16, 3), np.uint8)], fps=25)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.png").write_bytes(b"")
    with pytest.raises(WorkdirError, match="not an empty folder"):
        video_out.write_pngs(tmp_path / "full", [("a", np.zeros((4, 4, 3), np.uint8))], {})
    assert not (tmp_path / "nope").exists()
