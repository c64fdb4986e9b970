"""Fault injection: SIGKILL training at chosen moments, damage checkpoints, and require bitwise-exact resumes.

    python -m benchmarks faults --trials 10 [--json out.json] [--seed 0] [--quick] [--kinds save,eval]

One reference run of `configs/vae_digits.py:smoke` (24 steps, a checkpoint every 3, evaluation and a
preview every 6) trains without interruption. Each trial trains the same config in a fresh workdir,
SIGKILLs it (a third of single-process trials twice: the resumed run is killed again) and resumes it
to the end. Its final checkpoint (params, optimiser state and data position) must equal the
reference's bit for bit, and no checkpoint finalised before a kill may later be missing or
quarantined. Evaluations that never got a record are counted (one killed after its checkpoint was
finalised is not rerun). Kill points are found by watching the workdir rather than by sleeping, so a
slow, shared machine still lands them. Trial kinds, in turn:

- save: while an asynchronous checkpoint save is in flight (its `<step>.orbax-checkpoint-tmp-*`
  directory exists), at once or up to 50 ms later;
- eval: during a periodic evaluation (its checkpoint save has started, its `eval/` record is not written);
- export: while `python -m train.export` runs on the workdir, started when a checkpoint is finalised;
  half the time the export is SIGKILLed too. A finished export must equal the reference's export
  of its step byte for byte; a killed one must leave no file or a complete one;
- random: after a random step (or during start-up), up to 0.2 s later;
- multihost: one process of a 2-process loopback run (gloo, 2 CPU devices each), during a save or at a
  random step; the survivor is killed after 10 s if it has not exited, as a scheduler would; both
  resume; compared with an uninterrupted 2-process reference run.

Each trial also flips one random bit of the newest reference checkpoint's array data (in a copy, read
in-process): the flip must be detected, quarantined and the previous step restored. Deterministic
cases run once: a state-changing config change on resume, a non-finite update (fresh, and on resume),
and a truncated and a bit-flipped newest checkpoint resumed to the end.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

from benchmarks import common

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "configs/vae_digits.py:smoke"
FULL = {"total_steps": 24, "checkpoint.every": 3, "eval_every": 6, "preview_every": 6, "checkpoint.max_to_keep": 100}
QUICK = {"total_steps": 8, "checkpoint.every": 2, "eval_every": 4, "preview_every": 4, "checkpoint.max_to_keep": 100}
KINDS = ("save", "eval", "export", "random", "multihost")
SINGLE_KINDS = ("save", "eval", "export", "random")
TMP = ".orbax-checkpoint-tmp"
RUN_TIMEOUT = 1200.0  # s for one training process on a loaded 2-core machine
GRACE = 10.0  # s a multi-host survivor gets to exit on its own before it is killed
MULTIHOST_DEVICES = 2  # simulated CPU devices per process

Procs = list[subprocess.Popen]


@dataclasses.dataclass(frozen=True)
class Plan:
    """The config overrides every run trains with, and the steps where they save and evaluate."""

    overrides: dict[str, Any]

    @property
    def total(self) -> int:
        return int(self.overrides["total_steps"])

    def saves(self) -> list[int]:
        """Steps that write a checkpoint (the trainer's `_due` rule)."""
        return _due_steps(int(self.overrides["checkpoint.every"]), self.total)

    def evals(self) -> list[int]:
        """Steps that evaluate; each also saves first, so a started save marks an evaluation's start."""
        return [s for s in _due_steps(int(self.overrides["eval_every"]), self.total) if s in self.saves()]


def _due_steps(every: int, total: int) -> list[int]:
    return sorted({s for s in range(every, total + 1, every)} | {total}) if every else []


# ---------------------------------------------------------------- the workdir, seen from outside


def finalised(workdir: pathlib.Path) -> set[int]:
    """Checkpoint steps Orbax has finalised (renamed from their tmp directory)."""
    root = workdir / "checkpoints"
    return {int(p.name) for p in root.iterdir() if p.name.isdigit()} if root.is_dir() else set()


def in_flight(workdir: pathlib.Path) -> set[str]:
    """Names of unfinalised checkpoint directories: saves in progress, or left by a killed one."""
    return {name for name, _, _ in tmp_dirs(workdir)}


def tmp_dirs(workdir: pathlib.Path) -> set[tuple[str, int, int]]:
    """(name, inode, ctime) of each unfinalised checkpoint directory.

    Orbax names a step's tmp directory without a timestamp and replaces a killed save's leftover by
    a new one of the same name, so only the inode and ctime tell a resumed run's save from the leftover.
    """
    root = workdir / "checkpoints"
    found = set()
    for entry in os.scandir(root) if root.is_dir() else ():
        if TMP in entry.name:
            try:
                st = entry.stat()
            except FileNotFoundError:  # finalised or removed since the listing
                continue
            found.add((entry.name, st.st_ino, st.st_ctime_ns))
    return found


def quarantined(workdir: pathlib.Path) -> list[str]:
    """Entries of `checkpoints_corrupt/`, named `<step>-<time>`."""
    root = workdir / "checkpoints_corrupt"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def records(workdir: pathlib.Path, offset: int) -> list[dict]:
    """The complete metrics.jsonl records written after byte `offset`."""
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return []
    with open(path, "rb") as f:
        f.seek(offset)
        lines = f.read().split(b"\n")[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def _has(record: dict, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in record)


@dataclasses.dataclass
class Watch:
    """One attempt on a workdir, as its files show it: only what this attempt wrote counts."""

    workdir: pathlib.Path
    procs: Procs
    after: int  # the step it resumes from
    old_tmp: set[tuple[str, int, int]]
    offset: int

    @classmethod
    def begin(cls, workdir: pathlib.Path, procs: Procs, after: int) -> "Watch":
        metrics = workdir / "metrics.jsonl"
        return cls(workdir, procs, after, tmp_dirs(workdir), metrics.stat().st_size if metrics.is_file() else 0)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def saving(self, step: int | None = None) -> bool:
        """Whether a save this attempt started (of `step`, or any) is still unfinalised."""
        new = tmp_dirs(self.workdir) - self.old_tmp
        return any(step is None or name.startswith(f"{step}.") for name, _, _ in new)

    def save_started(self, step: int) -> bool:
        return self.saving(step) or step in finalised(self.workdir)

    def trained(self, step: int) -> bool:
        return any(r["step"] >= step and _has(r, "train/") for r in records(self.workdir, self.offset))

    def evaluated(self, step: int) -> bool:
        return any(r["step"] == step and _has(r, "eval/") for r in records(self.workdir, self.offset))

    def evaluating(self, plan: Plan) -> bool:
        """Whether an evaluation is running: the newest eval step this attempt has started is not yet recorded."""
        started = [e for e in plan.evals() if e > self.after and self.save_started(e)]
        return bool(started) and not self.evaluated(started[-1])

    def poll_until(self, condition: Callable[[], bool], interval: float = 0.002) -> bool:
        """True once `condition()` holds; False if a process exits first or the run's time is up."""
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            if condition():
                return True
            if not self.alive():
                return condition()
            time.sleep(interval)
        return False


# ---------------------------------------------------------------- processes


def child_env(devices: int = 1) -> dict[str, str]:
    """The environment of a training process: CPU, `devices` simulated devices, no inherited XLA flags."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def config_flags(overrides: dict[str, Any]) -> list[str]:
    return ["--config", CONFIG, *(f"--config.{k}={v}" for k, v in overrides.items())]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(command: list[str], log: pathlib.Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a process logging to a file (a pipe nobody drains would block it, and its peer in a collective)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def start_train(workdir: pathlib.Path, overrides: dict[str, Any], log: pathlib.Path, multihost: bool = False) -> Procs:
    """`python -m train` on the workdir, or the two processes of a loopback run."""
    if not multihost:
        command = [sys.executable, "-m", "train", *config_flags(overrides), "--workdir", str(workdir)]
        return [launch(command, log, child_env())]
    port = free_port()
    return [launch([sys.executable, "-m", "benchmarks._fault_worker", "--port", str(port), "--process_id", str(i),
                    *config_flags(overrides), "--workdir", str(workdir)],
                   log.with_name(f"{log.stem}.p{i}.log"), child_env(MULTIHOST_DEVICES)) for i in range(2)]


def wait_all(procs: Procs, timeout: float = RUN_TIMEOUT) -> list[int]:
    """Every process's exit status; all are killed (status -9) if they outlast `timeout` together."""
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            break
    stop(procs)
    return [p.returncode for p in procs]


def stop(procs: Procs) -> None:
    """SIGKILL whichever of `procs` still run, and reap them."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def _logs(log: pathlib.Path) -> list[pathlib.Path]:
    """A run's log files: the one given, or each process's of a loopback run."""
    return [log] if log.is_file() else sorted(log.parent.glob(f"{log.stem}.p*.log"))


def log_tail(log: pathlib.Path, chars: int = 2000) -> str:
    return "\n".join(f.read_text(errors="replace")[-chars:] for f in _logs(log))


def log_errors(log: pathlib.Path) -> str:
    """The lines that say why a run failed (Python exceptions, fatal runtime errors) per process, else the tail.

    A failed loopback run ends in kilobytes of C++ and thread stack dumps that would bury them.
    """
    pattern = re.compile(r"^([\w.]+(Error|Exception)\b.*|F\d{4} .*)$")
    found = []
    for f in _logs(log):
        lines = [line[:400] for line in f.read_text(errors="replace").splitlines() if pattern.match(line)]
        found.append(f"{f.name}: " + (" | ".join(lines[:3]) if lines else f.read_text(errors="replace")[-1000:]))
    return "\n".join(found)


# ---------------------------------------------------------------- kills


@dataclasses.dataclass
class Kill:
    """One SIGKILL: what it aimed at, what was happening when it landed, and what was on disk."""

    kind: str
    target: int | None = None  # the step whose save, evaluation, export or training it aimed at
    landed: bool = False  # a victim was still running
    during_save: bool = False
    during_eval: bool = False
    during_export: bool = False
    finalised: list[int] = dataclasses.field(default_factory=list)  # checkpoints on disk once all had stopped
    victim: int = 0  # process index
    survivor: str = ""  # multi-host: how the other process ended
    export: dict = dataclasses.field(default_factory=dict)


def kill_now(watch: Watch, plan: Plan, kill: Kill, victims: list[int], exporting: Callable[[], bool] = lambda: False
             ) -> Kill:
    """SIGKILL the victims, noting first what the run was doing; the record's `landed` says whether one was alive."""
    kill.during_save, kill.during_eval = watch.saving(), watch.evaluating(plan)
    kill.during_export = exporting()
    for i in victims:
        if watch.procs[i].poll() is None:
            os.kill(watch.procs[i].pid, signal.SIGKILL)
            kill.landed = True
        watch.procs[i].wait()
    kill.victim = victims[0]
    return kill


def aim_save(watch: Watch, plan: Plan, rng: random.Random) -> int | None:
    """Wait until a save after a random step is in flight, plus 0-50 ms; the step, or None if none was caught."""
    steps = [s for s in plan.saves() if s > watch.after]
    for step in steps[rng.randrange(len(steps)):] if steps else []:
        if not watch.poll_until(lambda: watch.save_started(step)) or not watch.saving(step):
            continue  # finished between two polls, or the run ended
        time.sleep(0.0 if rng.random() < 0.5 else rng.uniform(0.0, 0.05))
        if watch.saving(step):
            return step
    return None


def aim_eval(watch: Watch, plan: Plan, rng: random.Random) -> int | None:
    """Wait until an evaluation after a random step is running, plus 0-50 ms; the step, or None.

    An evaluation after the first of a process takes ~0.2 s, hence the short delay, half the time none.
    """
    steps = [s for s in plan.evals() if s > watch.after]
    for step in steps[rng.randrange(len(steps)):] if steps else []:
        if not watch.poll_until(lambda: watch.save_started(step) or watch.evaluated(step), interval=0.005):
            continue
        time.sleep(0.0 if rng.random() < 0.5 else rng.uniform(0.0, 0.05))
        if not watch.evaluated(step) and watch.alive():
            return step
    return None


def aim_random(watch: Watch, plan: Plan, rng: random.Random) -> int:
    """Wait until a random step has trained (step `after`: a random moment of start-up), plus up to 0.2 s."""
    step = rng.randint(watch.after, plan.total - 1)
    if step == watch.after:
        deadline = time.monotonic() + rng.uniform(0.0, 15.0)
        watch.poll_until(lambda: time.monotonic() >= deadline or watch.trained(step + 1), interval=0.05)
    else:
        watch.poll_until(lambda: watch.trained(step), interval=0.005)
    time.sleep(rng.uniform(0.0, 0.2))
    return step


def single_kill(kind: str, workdir: pathlib.Path, plan: Plan, rng: random.Random, after: int, log: pathlib.Path,
                exports: "Exports") -> Kill:
    """Train in `workdir` (resuming from `after`) and SIGKILL it at a moment of the given kind."""
    procs = start_train(workdir, plan.overrides, log)
    try:
        watch = Watch.begin(workdir, procs, after)
        if kind == "export":
            return export_kill(watch, plan, rng, exports, log.with_name(f"{log.stem}.export.log"))
        aim = {"save": aim_save, "eval": aim_eval, "random": aim_random}[kind]
        kill = Kill(kind, aim(watch, plan, rng))
        kill_now(watch, plan, kill, [0])
        kill.finalised = sorted(finalised(workdir))
        return kill
    finally:
        stop(procs)


def export_kill(watch: Watch, plan: Plan, rng: random.Random, exports: "Exports", log: pathlib.Path) -> Kill:
    """Start `python -m train.export` when a random checkpoint is finalised and SIGKILL the trainer while it runs.

    Half the time the export is killed as well, at a random moment of its usual run time.
    """
    steps = [s for s in plan.saves() if watch.after < s < plan.total]
    step = rng.choice(steps) if steps else None
    kill = Kill("export", step)
    if step is None or not watch.poll_until(lambda: step in finalised(watch.workdir), interval=0.005):
        kill_now(watch, plan, kill, [0])
        kill.finalised = sorted(finalised(watch.workdir))
        return kill
    out = log.with_name(f"{log.stem}.safetensors")
    started = time.monotonic()
    proc = launch([sys.executable, "-m", "train.export", "--workdir", str(watch.workdir), "--out", str(out)], log,
                  child_env())
    try:
        time.sleep(rng.uniform(0.0, 0.5))
        kill_now(watch, plan, kill, [0], exporting=lambda: proc.poll() is None)
        kill.finalised = sorted(finalised(watch.workdir))
        kill_export = rng.random() < 0.5
        if kill_export:
            deadline = started + rng.uniform(0.0, exports.typical_seconds())
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if proc.poll() is None:
                proc.kill()
        rc = wait_all([proc], timeout=600)[0]
        if not kill_export and rc == 0:
            exports.seconds.append(time.monotonic() - started)
        kill.export = exports.check(out, rc, killed=kill_export and rc == -signal.SIGKILL)
        if kill.export.get("error"):
            kill.export["log"] = log.read_text(errors="replace")[-2000:]
        return kill
    finally:
        stop([proc])


def multihost_kill(workdir: pathlib.Path, plan: Plan, rng: random.Random, log: pathlib.Path) -> Kill:
    """SIGKILL one process of a loopback run during a save or after a random step; the survivor gets GRACE s."""
    procs = start_train(workdir, plan.overrides, log, multihost=True)
    try:
        watch = Watch.begin(workdir, procs, 0)
        kind = rng.choice(("save", "random"))
        target = aim_save(watch, plan, rng) if kind == "save" else aim_random(watch, plan, rng)
        victim = rng.randrange(2)
        kill = kill_now(watch, plan, Kill(f"multihost-{kind}", target), [victim])
        survivor = procs[1 - victim]
        try:
            survivor.wait(timeout=GRACE)
            kill.survivor = f"exited {survivor.returncode}"
        except subprocess.TimeoutExpired:
            kill.survivor = "killed (still running)"
        stop(procs)
        kill.finalised = sorted(finalised(workdir))
        return kill
    finally:
        stop(procs)


# ---------------------------------------------------------------- states and exports


def final_state(workdir: pathlib.Path) -> tuple[int, dict[str, np.ndarray]]:
    """The newest checkpoint's step and every array of it (state leaves, data-iterator files as bytes)."""
    from train import runs

    _, step, state = runs.load_run(workdir)
    arrays = _state_arrays(state)
    for f in sorted((workdir / "checkpoints" / str(step) / "data").glob("process_*.json")):
        arrays[f"data/{f.name}"] = np.frombuffer(f.read_bytes(), np.uint8)
    return step, arrays


def differences(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> list[str]:
    """Names of arrays missing on either side or differing in dtype, shape or any bit."""
    names = sorted(set(got) | set(want))
    return [n for n in names if n not in got or n not in want or got[n].dtype != want[n].dtype
            or got[n].shape != want[n].shape or got[n].tobytes() != want[n].tobytes()]


@dataclasses.dataclass
class Exports:
    """The reference run's exports by step, made on demand, and how long an export usually takes."""

    reference: pathlib.Path
    scratch: pathlib.Path
    seconds: list[float] = dataclasses.field(default_factory=list)
    files: dict[int, tuple[dict, dict]] = dataclasses.field(default_factory=dict)

    def typical_seconds(self) -> float:
        return float(np.median(self.seconds)) if self.seconds else 10.0

    def of_step(self, step: int) -> tuple[dict, dict]:
        """The reference's export of `step` as (header, arrays)."""
        if step not in self.files:
            from train import export

            out = self.scratch / f"reference-{step}.safetensors"
            self.files[step] = read_export(export.export_run(self.reference, step, out))
        return self.files[step]

    def check(self, out: pathlib.Path, rc: int, killed: bool) -> dict:
        """A finished export must hold the reference's header and arrays for its step; a killed one none or all.

        Arrays are compared bit for bit, the header as a dict: safetensors writes its metadata map
        in no fixed order, so two exports of one checkpoint need not be the same bytes.
        """
        result: dict[str, Any] = {"rc": rc, "killed": killed, "written": out.is_file(),
                                  "tmp_left": len(list(out.parent.glob("*.tmp")))}
        if not out.is_file():
            result["error"] = "" if killed else f"export exited {rc} without writing {out.name}"
            return result
        try:
            header, arrays = read_export(out)
            step = int(json.loads(header["metadata"])["step"])
        except Exception as error:  # noqa: BLE001  (a partial file is the finding)
            result["error"] = f"unreadable export: {type(error).__name__}: {error}"
            return result
        want_header, want_arrays = self.of_step(step)
        diff = differences(arrays, want_arrays)
        result.update(step=step, exact=header == want_header and not diff)
        result["error"] = "" if result["exact"] else f"export of step {step} differs from the reference's: {diff[:5]}"
        return result


def read_export(path: pathlib.Path) -> tuple[dict, dict[str, np.ndarray]]:
    """An exported .safetensors file's header and arrays."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


# ---------------------------------------------------------------- trials


def run_to_end(workdir: pathlib.Path, plan: Plan, log: pathlib.Path, multihost: bool = False) -> list[int]:
    """Train (or resume) the workdir to the last step; the exit statuses."""
    return wait_all(start_train(workdir, plan.overrides, log, multihost))


def judge(workdir: pathlib.Path, reference: dict[str, np.ndarray], plan: Plan, kills: list[Kill], rcs: list[int],
          log: pathlib.Path) -> dict:
    """A trial's verdict: exact final state, and checkpoints finalised before a kill that went missing or aside.

    Evaluations with no record are reported too: one killed after its checkpoint was finalised is never rerun.
    """
    before = set().union(*(k.finalised for k in kills))
    moved = quarantined(workdir)
    moved_steps = {int(n.split("-")[0]) for n in moved}
    lost = sorted((before - finalised(workdir)) | (before & moved_steps))
    evaluated = {r["step"] for r in records(workdir, 0) if _has(r, "eval/")}
    result: dict[str, Any] = {"rcs": rcs, "lost": lost, "quarantined": moved, "tmp_left": sorted(in_flight(workdir)),
                              "evals_missing": [e for e in plan.evals() if e not in evaluated]}
    if any(rcs):
        result.update(exact=False, error=f"resume exited {rcs}: {log_errors(log)}", log=log_tail(log))
        return result
    step, arrays = final_state(workdir)
    diff = differences(arrays, reference)
    result.update(exact=step == plan.total and not diff, step=step, differing=diff[:10], n_differing=len(diff))
    return result


def trial(index: int, kind: str, bench: "Bench") -> dict:
    """Kill a run (twice for a third of single-process trials), resume it to the end and judge it."""
    rng, plan = bench.rng, bench.plan
    root = bench.base / f"trial_{index:03d}"
    workdir = root / "run"
    started = time.monotonic()
    kills: list[Kill] = []
    if kind == "multihost":
        reference = bench.reference_multihost()
        kills.append(multihost_kill(workdir, plan, rng, root / "attempt_0.log"))
    else:
        reference = bench.reference
        times = 2 if rng.random() < 1 / 3 else 1
        for n in range(times):
            after = max(kills[-1].finalised, default=0) if kills else 0
            if after >= plan.total:  # the first kill came after the last checkpoint: nothing is left to interrupt
                break
            this = kind if n == 0 else rng.choice(SINGLE_KINDS)
            kills.append(single_kill(this, workdir, plan, rng, after, root / f"attempt_{n}.log", bench.exports))
    log = root / "resume.log"
    result = judge(workdir, reference, plan, kills, run_to_end(workdir, plan, log, kind == "multihost"), log)
    result.update(index=index, kind=kind, kills=[dataclasses.asdict(k) for k in kills],
                  seconds=round(time.monotonic() - started, 1))
    return result


# ---------------------------------------------------------------- bit flips and deterministic cases


def flip_a_bit(step_dir: pathlib.Path, rng: random.Random) -> dict:
    """Flip one random bit of a checkpoint's array data (`state/ocdbt.process_0/d/*`), every byte equally likely."""
    files = sorted(f for f in (step_dir / "state" / "ocdbt.process_0" / "d").iterdir() if f.stat().st_size)
    sizes = [f.stat().st_size for f in files]
    offset = rng.randrange(sum(sizes))
    for f, size in zip(files, sizes):
        if offset < size:
            data = bytearray(f.read_bytes())
            bit = rng.randrange(8)
            data[offset] ^= 1 << bit
            f.write_bytes(bytes(data))
            return {"file": f.name, "size": size, "offset": offset, "bit": bit}
        offset -= size
    raise AssertionError("unreachable")


class _Warnings(logging.Handler):
    """Collects the checkpoint module's warnings (the quarantine lines)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def flip_trial(bench: "Bench", index: int) -> dict:
    """Flip a bit in a copy of the reference's newest checkpoint and restore in-process: detected means quarantined."""
    from train import checkpoint

    last, previous = bench.plan.saves()[-1], bench.plan.saves()[-2]
    workdir = bench.base / "flips" / f"{index:03d}"
    for step in (previous, last):
        shutil.copytree(bench.ref_workdir / "checkpoints" / str(step), workdir / "checkpoints" / str(step))
    flip = flip_a_bit(workdir / "checkpoints" / str(last), bench.rng)
    handler = _Warnings()
    logger = logging.getLogger("train.checkpoint")
    logger.addHandler(handler)
    logger.propagate = False  # collected into the result rather than printed
    checkpointer = checkpoint.Checkpointer(workdir, max_to_keep=100)
    try:
        restored = checkpointer.restore_latest(bench.abstract_state(), None)
    finally:
        checkpointer.close()
        logger.removeHandler(handler)
        logger.propagate = True
    step = restored.step if restored else None
    detected = step == previous and [n.split("-")[0] for n in quarantined(workdir)] == [str(last)]
    flip.update(detected=detected, restored=step, warnings=handler.lines)
    if step == last:  # not detected: harmless only if every value read back is the reference's
        flip["harmless"] = not differences(_state_arrays(restored.state), bench.reference_state_only())
    shutil.rmtree(workdir)
    return flip


def _state_arrays(state: Any) -> dict[str, np.ndarray]:
    """Every leaf of a state on the host, by `state/<path>`."""
    import jax

    return {"state/" + jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(jax.device_get(x))
            for p, x in jax.tree_util.tree_leaves_with_path(state)}


def copy_reference(bench: "Bench", name: str, keep: Callable[[int], bool] = lambda s: True) -> pathlib.Path:
    """A copy of the reference workdir with the checkpoints `keep` selects."""
    workdir = bench.base / "cases" / name
    shutil.copytree(bench.ref_workdir, workdir, ignore=shutil.ignore_patterns("tensorboard", "previews", "export"))
    for step in finalised(workdir):
        if not keep(step):
            shutil.rmtree(workdir / "checkpoints" / str(step))
    return workdir


def run_case(workdir: pathlib.Path, overrides: dict[str, Any], name: str) -> tuple[int, str]:
    """Run `python -m train` once; its exit status and output."""
    log = workdir.parent / f"{name}.log"
    rc = wait_all([launch([sys.executable, "-m", "train", *config_flags(overrides), "--workdir", str(workdir)],
                          log, child_env())])[0]
    return rc, log.read_text(errors="replace")


def case_config_change(bench: "Bench") -> dict:
    """Resuming with a changed model field must stop (non-zero, CheckpointError) and move or change nothing."""
    workdir = copy_reference(bench, "config_change", lambda s: s <= bench.plan.total // 2)
    before, frozen = finalised(workdir), (workdir / "config.json").read_text()
    rc, out = run_case(workdir, {**bench.plan.overrides, "model.latent_dim": 8}, "config_change")
    checks = {"nonzero_exit": rc != 0, "names_the_field": "model.latent_dim: 16 -> 8" in out,
              "checkpoint_error": "checkpoint error" in out, "no_traceback": "Traceback" not in out,
              "every_checkpoint_kept": finalised(workdir) == before, "nothing_quarantined": not quarantined(workdir),
              "config_json_unchanged": (workdir / "config.json").read_text() == frozen}
    return _case(checks, rc, out)


def case_nan_fresh(bench: "Bench") -> dict:
    """SGD at lr 1e38 makes step 1's parameters non-finite: the run must stop and save no checkpoint."""
    workdir = bench.base / "cases" / "nan_fresh"
    overrides = {**bench.plan.overrides, "optim.name": "sgd", "optim.learning_rate": 1e38, "optim.b1": 0.0,
                 "checkpoint.every": 1}
    rc, out = run_case(workdir, overrides, "nan_fresh")
    checks = {"nonzero_exit": rc != 0, "says_nonfinite": "non-finite" in out,
              "no_checkpoint_saved": not finalised(workdir)}
    return _case(checks, rc, out)


def case_nan_resume(bench: "Bench") -> dict:
    """Resuming half-way at lr 1e38 (a change that keeps the state) must stop and leave only finite checkpoints."""
    half = bench.plan.total // 2
    workdir = copy_reference(bench, "nan_resume", lambda s: s <= half)
    rc, out = run_case(workdir, {**bench.plan.overrides, "optim.learning_rate": 1e38}, "nan_resume")
    bad = _unrestorable(bench, workdir)
    checks = {"nonzero_exit": rc != 0, "says_nonfinite": "non-finite" in out, "every_checkpoint_finite": not bad,
              "nothing_quarantined": not quarantined(workdir)}
    result = _case(checks, rc, out)
    result.update(steps=sorted(finalised(workdir)), unrestorable=bad)
    return result


def _unrestorable(bench: "Bench", workdir: pathlib.Path) -> list[str]:
    """Checkpoints of `workdir` that fail to restore or to verify (checksums, finiteness)."""
    from train import checkpoint

    checkpointer = checkpoint.Checkpointer(workdir, max_to_keep=100)
    bad = []
    try:
        for step in checkpointer.steps():
            try:
                checkpointer.restore(step, bench.abstract_state())
            except Exception as error:  # noqa: BLE001  (any failure is what this case reports)
                bad.append(f"{step}: {type(error).__name__}: {str(error)[:200]}")
    finally:
        checkpointer.close()
    return bad


def case_damaged(bench: "Bench", name: str, damage: Callable[[pathlib.Path], Any]) -> dict:
    """Damage the newest checkpoint of a reference copy and resume: quarantined once, fallback, exact end."""
    last = bench.plan.saves()[-1]
    workdir = copy_reference(bench, name)
    detail = damage(workdir / "checkpoints" / str(last))
    rc, out = run_case(workdir, bench.plan.overrides, name)
    lines = [line for line in out.splitlines() if "cannot be restored" in line]
    checks = {"zero_exit": rc == 0, "one_warning_line": len(lines) == 1 and f"checkpoint {last} " in lines[0],
              "no_traceback": "Traceback" not in out and "Exception ignored" not in out,
              "quarantined": [n.split("-")[0] for n in quarantined(workdir)] == [str(last)]}
    if rc == 0:
        step, arrays = final_state(workdir)
        checks["exact"] = step == bench.plan.total and not differences(arrays, bench.reference)
    result = _case(checks, rc, out)
    result.update(warning=lines[0] if lines else "", damage=detail)
    return result


def truncate(step_dir: pathlib.Path) -> dict:
    """Cut every file of a checkpoint's state to half its length, as a full disk or a torn copy would."""
    files = [f for f in (step_dir / "state").rglob("*") if f.is_file() and f.stat().st_size]
    for f in files:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return {"files": len(files)}


def _case(checks: dict[str, bool], rc: int, out: str) -> dict:
    ok = all(checks.values())
    return {"ok": ok, "rc": rc, "checks": checks, **({} if ok else {"log": out[-3000:]})}


# ---------------------------------------------------------------- the benchmark


@dataclasses.dataclass
class Bench:
    """What every trial shares: plan, random source, scratch space and the reference runs."""

    plan: Plan
    base: pathlib.Path
    rng: random.Random
    ref_workdir: pathlib.Path = None  # type: ignore[assignment]
    reference: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    exports: Exports = None  # type: ignore[assignment]
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    _multihost: dict[str, np.ndarray] | None = None
    _multihost_error: str = ""
    _abstract: Any = None

    def train_reference(self) -> None:
        """The uninterrupted single-process run every single-process trial must reproduce."""
        self.ref_workdir = self.base / "reference" / "run"
        started = time.monotonic()
        rcs = run_to_end(self.ref_workdir, self.plan, self.base / "reference" / "train.log")
        if rcs != [0]:
            raise RuntimeError(f"reference run failed: {log_errors(self.base / 'reference' / 'train.log')}")
        self.timings["reference_seconds"] = round(time.monotonic() - started, 1)
        step, self.reference = final_state(self.ref_workdir)
        assert step == self.plan.total, step
        self.exports = Exports(self.ref_workdir, self.base / "reference")

    def reference_multihost(self) -> dict[str, np.ndarray]:
        """The uninterrupted 2-process run, trained on first use (a failure is not retried: it can hang for minutes)."""
        if self._multihost_error:
            raise RuntimeError(self._multihost_error)
        if self._multihost is None:
            root = self.base / "reference_multihost"
            started = time.monotonic()
            rcs = run_to_end(root / "run", self.plan, root / "train.log", multihost=True)
            if rcs != [0, 0]:
                self._multihost_error = f"2-process reference run failed {rcs}: {log_errors(root / 'train.log')}"
                raise RuntimeError(self._multihost_error)
            self.timings["reference_multihost_seconds"] = round(time.monotonic() - started, 1)
            step, self._multihost = final_state(root / "run")
            assert step == self.plan.total, step
        return self._multihost

    def abstract_state(self) -> Any:
        if self._abstract is None:
            from train import runs

            self._abstract = runs.build(runs.load_config(self.ref_workdir)).abstract_state
        return self._abstract

    def reference_state_only(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.reference.items() if k.startswith("state/")}


def deterministic_cases(bench: Bench) -> dict[str, dict]:
    """The cases that need no luck: config change, non-finite updates, truncated and bit-flipped checkpoints."""
    cases: dict[str, Callable[[], dict]] = {
        "config_change": lambda: case_config_change(bench),
        "nan_fresh": lambda: case_nan_fresh(bench),
        "nan_resume": lambda: case_nan_resume(bench),
        "truncated": lambda: case_damaged(bench, "truncated", truncate),
        "bit_flip_resume": lambda: case_damaged(bench, "bit_flip_resume", lambda d: flip_a_bit(d, bench.rng)),
    }
    results = {}
    for name, case in cases.items():
        started = time.monotonic()
        results[name] = case()
        results[name]["seconds"] = round(time.monotonic() - started, 1)
        _progress(f"case {name}: {'ok' if results[name]['ok'] else 'FAILED ' + str(results[name]['checks'])}")
    return results


def summarise(trials: list[dict], flips: list[dict], cases: dict[str, dict]) -> dict:
    """The counts the summary line and the acceptance criteria read."""
    kills = [k for t in trials for k in t["kills"]]
    exports = [k["export"] for k in kills if k["export"]]
    flip_resume = cases.get("bit_flip_resume", {})
    flips_injected = len(flips) + (1 if flip_resume else 0)
    flips_detected = sum(f["detected"] for f in flips) + (1 if flip_resume.get("checks", {}).get("quarantined") else 0)
    return {
        "tried": len(trials), "exact": sum(bool(t.get("exact")) for t in trials),
        "checkpoints_lost": sum(len(t["lost"]) for t in trials),
        "quarantined": sum(len(t["quarantined"]) for t in trials),
        "kills": len(kills), "kills_landed": sum(k["landed"] for k in kills),
        "kills_during_save": sum(k["landed"] and k["during_save"] for k in kills),
        "kills_during_eval": sum(k["landed"] and k["during_eval"] for k in kills),
        "kills_during_export": sum(k["landed"] and k["during_export"] for k in kills),
        "kills_multihost": sum(k["kind"].startswith("multihost") for k in kills),
        "trials_killed_twice": sum(len(t["kills"]) > 1 for t in trials),
        "evaluations_lost": sum(len(t.get("evals_missing", [])) for t in trials),
        "exports": len(exports), "exports_failed": sum(bool(e.get("error")) for e in exports),
        "flips_injected": flips_injected, "flips_detected": flips_detected,
        "flips_undetected_harmless": sum(bool(f.get("harmless")) for f in flips),
        "cases_ok": sum(c["ok"] for c in cases.values()), "cases": len(cases),
    }


def summary_line(s: dict) -> str:
    """`N tried / N exact / K checkpoints lost`, then where the kills landed and the other counts."""
    return (f"{s['tried']} tried / {s['exact']} exact / {s['checkpoints_lost']} checkpoints lost; "
            f"{s['kills_landed']} kills ({s['kills_during_save']} during a save, {s['kills_during_eval']} during "
            f"evaluation, {s['kills_during_export']} during an export, {s['kills_multihost']} multi-host); "
            f"{s['quarantined']} quarantined; {s['evaluations_lost']} evaluations never recorded; "
            f"exports {s['exports'] - s['exports_failed']}/{s['exports']} ok; "
            f"bit flips {s['flips_detected']}/{s['flips_injected']} detected; "
            f"deterministic cases {s['cases_ok']}/{s['cases']} ok")


def _progress(text: str) -> None:
    print(f"[faults] {text}", file=sys.stderr, flush=True)


def _trial_line(t: dict) -> str:
    kills = ", ".join(f"{k['kind']}@{k['target']}" + ("" if k["landed"] else " (missed)") for k in t["kills"])
    verdict = "exact" if t.get("exact") else f"NOT EXACT ({t.get('error') or t.get('differing')})"
    return f"trial {t['index']} {t['kind']}: kills [{kills}], {verdict}, lost {t['lost']} ({t['seconds']} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="kill-and-resume trials (kinds taken in turn)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="8 steps instead of 24 (for tests)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="another config override for every run, e.g. --set data.worker_count=2 (repeatable)")
    parser.add_argument("--no-cases", action="store_true", help="skip the deterministic cases")
    parser.add_argument("--dir", help="keep every workdir and log here (default: a temporary one, kept on failure)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        parser.error(f"unknown kinds {unknown}; choose from {','.join(KINDS)}")
    extra = dict(item.split("=", 1) for item in args.set if "=" in item)
    if len(extra) != len(args.set):
        parser.error("--set takes FIELD=VALUE")
    results = run(args.trials, kinds, args.seed, {**(QUICK if args.quick else FULL), **extra}, not args.no_cases,
                  args.dir)
    _progress(results["summary_line"])
    common.emit(results, args.json)


def run(trials: int, kinds: list[str], seed: int, overrides: dict[str, Any], cases: bool, directory: str | None
        ) -> dict:
    """The whole benchmark: references, trials, bit flips, deterministic cases; the results dict."""
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain reads absl flags in-process
        flags.FLAGS.mark_as_parsed()
    base = pathlib.Path(directory or tempfile.mkdtemp(prefix="faults-")).absolute()
    base.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    bench = Bench(Plan(overrides), base, random.Random(seed))
    bench.train_reference()
    _progress(f"reference run: {bench.timings['reference_seconds']} s")
    results, flips = [], []
    for i in range(trials):
        kind = kinds[i % len(kinds)]
        try:
            results.append(trial(i, kind, bench))
        except Exception as error:  # noqa: BLE001  (a crashed trial is a result, not the end of the benchmark)
            results.append({"index": i, "kind": kind, "kills": [], "lost": [], "quarantined": [], "exact": False,
                            "error": f"{type(error).__name__}: {error}", "seconds": 0})
        _progress(_trial_line(results[-1]))
        flips.append(flip_trial(bench, i))
    case_results = deterministic_cases(bench) if cases else {}
    summary = summarise(results, flips, case_results)
    failed = summary["exact"] < summary["tried"] or summary["checkpoints_lost"] or \
        summary["flips_detected"] < summary["flips_injected"] or summary["cases_ok"] < summary["cases"] or \
        summary["exports_failed"]
    if not directory and not failed:
        shutil.rmtree(base, ignore_errors=True)
    return {"benchmark": "faults", "summary_line": summary_line(summary), **summary,
            "wall_seconds": round(time.monotonic() - started, 1), "seed": seed, "kinds": kinds,
            "config": CONFIG, "overrides": bench.plan.overrides, "workdirs": str(base) if directory or failed else None,
            **bench.timings, "trial_results": results, "flips": flips, "deterministic": case_results,
            "machine": common.machine()}


if __name__ == "__main__":
    common.entry(main)
