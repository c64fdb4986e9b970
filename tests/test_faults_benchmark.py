"""The fault-injection benchmark: its kill-point detection and comparisons, and one quick run end to end."""
import json
import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_plan_saves_and_evaluates_where_the_trainer_does():
    from benchmarks import faults

    plan = faults.Plan(faults.FULL)
    assert plan.saves() == [3, 6, 9, 12, 15, 18, 21, 24]
    assert plan.evals() == [6, 12, 18, 24]
    assert faults.Plan(faults.QUICK).evals() == [4, 8]


def test_differences_compare_bits_not_values():
    from benchmarks import faults

    a = {"x": np.array([0.0, np.nan], np.float32), "y": np.zeros(2, np.int32)}
    assert faults.differences(a, {k: v.copy() for k, v in a.items()}) == [], "the same NaN bits are equal"
    assert faults.differences(a, dict(a, x=np.array([-0.0, np.nan], np.float32))) == ["x"], "-0.0 is another bit"
    assert faults.differences(a, dict(a, y=np.zeros(2, np.int64))) == ["y"]
    assert faults.differences(a, {"x": a["x"]}) == ["y"]


def test_no_second_kill_is_aimed_at_a_run_the_first_kill_left_finished(tmp_path, monkeypatch):
    """Trial 77 of a 100-trial run: its export kill landed after the last checkpoint, and the second kill then
    asked for a random step in an empty range; the trial must judge the finished run instead of crashing."""
    from benchmarks import faults

    plan = faults.Plan(faults.FULL)
    calls = []

    def fake_kill(kind, workdir, plan_, rng, after, log, exports):
        calls.append(after)
        return faults.Kill(kind, plan.total, landed=True, finalised=faults._due_steps(3, plan.total))

    monkeypatch.setattr(faults, "single_kill", fake_kill)
    monkeypatch.setattr(faults, "run_to_end", lambda *a: 0)
    monkeypatch.setattr(faults, "judge", lambda *a: {"exact": True})
    rng = random.Random(0)
    rng.random = lambda: 0.0  # forces two kills
    bench = faults.Bench(plan, tmp_path, rng)
    result = faults.trial(0, "export", bench)
    assert calls == [0] and len(result["kills"]) == 1 and result["exact"]


def test_a_flip_changes_exactly_one_bit_of_the_array_data(tmp_path):
    from benchmarks import faults

    data = tmp_path / "state" / "ocdbt.process_0" / "d"
    data.mkdir(parents=True)
    before = {name: bytes(range(256)) * 4 for name in ("a", "b")}
    for name, content in before.items():
        (data / name).write_bytes(content)
    flip = faults.flip_a_bit(tmp_path, random.Random(3))
    after = {name: (data / name).read_bytes() for name in before}
    changed = [(n, i) for n in before for i, (x, y) in enumerate(zip(before[n], after[n])) if x != y]
    assert changed == [(flip["file"], flip["offset"])]
    name, offset = changed[0]
    assert before[name][offset] ^ after[name][offset] == 1 << flip["bit"]


def test_a_resumed_runs_save_is_told_from_a_killed_runs_leftover(tmp_path):
    """Orbax reuses `<step>.orbax-checkpoint-tmp` for a step's save, so the name alone would hide the new save."""
    from benchmarks import faults

    leftover = tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp"
    leftover.mkdir(parents=True)
    watch = faults.Watch.begin(tmp_path, [], after=3)
    assert not watch.saving(6) and not watch.saving()
    leftover.rmdir()
    (tmp_path / "checkpoints" / "7").mkdir()  # takes the old inode number if the file system reuses it at once
    leftover.mkdir()
    assert watch.saving(6) and not watch.saving(9)
    assert watch.save_started(7) and not watch.save_started(9)


@pytest.mark.slow  # 4-6 min on 2 shared cores: a reference run, one killed and resumed run, five cases
def test_a_quick_run_reports_exact_resumes_and_consistent_counts(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = tmp_path / "faults.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "faults", "--quick", "--trials", "1", "--seed", "1",
                           "--json", str(out), "--dir", str(tmp_path / "work")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(out.read_text())
    trials, kills = r["trial_results"], [k for t in r["trial_results"] for k in t["kills"]]
    assert r["tried"] == len(trials) == 1 and r["kills"] == len(kills) >= 1
    assert r["exact"] == sum(bool(t["exact"]) for t in trials)
    assert r["checkpoints_lost"] == sum(len(t["lost"]) for t in trials)
    assert r["quarantined"] == sum(len(t["quarantined"]) for t in trials)
    assert r["evaluations_lost"] == sum(len(t.get("evals_missing", [])) for t in trials)
    assert r["kills_landed"] >= r["kills_during_save"] and r["kills_landed"] >= r["kills_during_eval"]
    assert r["flips_injected"] == len(r["flips"]) + 1 and r["cases"] == len(r["deterministic"]) == 5
    assert r["summary_line"].startswith(f"1 tried / {r['exact']} exact / {r['checkpoints_lost']} checkpoints lost")
    assert r["summary_line"] in proc.stderr and r["machine"]["cpu_count"]
    failed = {name: c["checks"] for name, c in r["deterministic"].items() if not c["ok"]}
    assert (r["exact"], r["checkpoints_lost"], failed) == (1, 0, {}), json.dumps(trials, indent=1)[-4000:]
    assert r["flips_detected"] == r["flips_injected"], r["flips"]
