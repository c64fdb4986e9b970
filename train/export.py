"""`python -m train.export --workdir runs/x [--step N] [--out file.safetensors]`: params-only weights.

The export is what `zoo.pretrained.load` reads: the family picks the inference params (e.g. the
EMA generator), and the file holds them with the model's registry name and fields, and in its metadata
what the family measures for it on the run's evaluation split (a detector's pinned 5%-FPR threshold).
"""
from __future__ import annotations

import pathlib
from typing import Any, Sequence

from absl import flags

from train import cli
from zoo import pretrained


def export_run(workdir: str | pathlib.Path, step: int | None = None,
               out: str | pathlib.Path | None = None) -> pathlib.Path:
    """Restore a run's checkpoint and write its params-only export; returns the file.

    The workdir and the output directory are checked first, so a typo or a read-only disk fails
    before the checkpoint is read.
    """
    from train import runs

    workdir = pathlib.Path(workdir)
    cli.check_run_dir(workdir)
    cli.check_writable(pathlib.Path(out).parent if out else workdir / "export", "pass --out FILE to write it elsewhere")
    setup, step, state = runs.load_run(workdir, step)
    config = setup.config
    exported = setup.family.export(state)
    out = pathlib.Path(out) if out else workdir / "export" / f"{exported.model}-{step}.safetensors"
    metadata = {"family": config.family, "step": step, "data": config.data.source}
    face_types = trained_face_types(setup.train_source)
    if len(face_types) == 1:
        metadata["face_type"] = face_types[0]
    if setup.family.export_metadata is not None:
        metadata |= setup.family.export_metadata(state, setup.eval_source, setup.eval_spec)
    return pretrained.export(out, exported.model, exported.model_config, exported.params, metadata=metadata,
                             collections=exported.collections, input_shape=setup.train_source.info.image_shape)


def trained_face_types(source: Any) -> list[str]:
    """The face types of the aligned sets a run trained on (through pairs and resizing), sorted; [] for none.

    An export records a single one so `train.merge` aligns new footage as the training faces were;
    any source with a `face_type` attribute (data/faces/aligned.py's) counts.
    """
    found: set[str] = set()
    stack = [source]
    while stack:
        node = stack.pop()
        if getattr(node, "face_type", None):
            found.add(node.face_type)
        stack += [getattr(node, name) for name in ("a", "b", "source") if hasattr(node, name)]
    return sorted(found)


def main(argv: Sequence[str]) -> None:
    del argv
    f = cli.run_flags()
    print(export_run(f.workdir, f.step, f.out))


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "Training workdir to export from.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
    flags.DEFINE_string("out", None, "Output file (default: <workdir>/export/<model>-<step>.safetensors).")
    cli.run(main)
