"""`python -m data.faces extract|template`: cut aligned faces out of footage, or rebuild the canonical face shape.

    python -m data.faces extract --input VIDEO_OR_DIR --output DIR [--face-type whole_face|full_face|head]
        [--size 256] [--every K] [--all-faces] [--workers N] [--detector hog|cnn] [--upsample 1]
    python -m data.faces template [--shared ../shared/data] [--every 3] [--output data/faces/template_68.json]

Bad input (a missing or unreadable file, no face anywhere, an output directory in use) prints one
`data error: ...` line and exits with status 2, as `python -m train` does; --debug (or ZOO_DEBUG=1)
shows the traceback instead. The extraction's layout and rules are in data/faces/extract.py.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from zoo.errors import ZooError

BAD_INPUT_STATUS = 2
DEBUG_ENV = "ZOO_DEBUG"


def _parser() -> argparse.ArgumentParser:
    from data.faces import align, template
    from data.faces.dlib_models import DETECTORS

    parser = argparse.ArgumentParser(prog="python -m data.faces", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of a bad-input error")
    commands = parser.add_subparsers(dest="command", required=True)
    ex = commands.add_parser("extract", help="detect, align and mask the faces of a video or image folder")
    ex.add_argument("--input", required=True, help="a video file, or a directory of images (searched recursively)")
    ex.add_argument("--output", required=True, help="a new or empty directory for the faces, masks and index")
    ex.add_argument("--face-type", default="whole_face", choices=align.FACE_TYPES, help="crop (default whole_face)")
    ex.add_argument("--size", type=int, default=256, help="side of the aligned crop in pixels (default 256)")
    ex.add_argument("--every", type=int, default=1, help="use every K-th frame (default 1: all)")
    ex.add_argument("--all-faces", action="store_true", help="keep every face of a frame, not only the largest")
    ex.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                    help="processes detecting faces (default: the CPU count, at most 8)")
    ex.add_argument("--detector", default="hog", choices=DETECTORS,
                    help="dlib HOG (default) or the CNN (MMOD) detector, slower but finds turned faces")
    ex.add_argument("--upsample", type=int, default=1,
                    help="double the frame this many times before detecting, to find small faces (default 1)")
    tp = commands.add_parser("template", help="rebuild the canonical 68-point face shape from GRID and Olivetti")
    tp.add_argument("--shared", default="../shared/data", help="the directory holding grid/ and olivetti/")
    tp.add_argument("--every", type=int, default=3, help="use every K-th GRID frame (default 3)")
    tp.add_argument("--output", default=str(template.TEMPLATE_FILE), help="where to write the JSON")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "template":
        from data.faces import template

        record = template.build(args.shared, args.output, every=args.every)
        print(f"{args.output}: mean of {record['faces']} faces, residual {record['procrustes_residual']['mean']:.4f}")
        return 0
    from data.faces import extract

    options = extract.Options(face_type=args.face_type, size=args.size, all_faces=args.all_faces,
                              upsample=args.upsample, detector=args.detector)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the summary below says everything the warnings would
        summary = extract.extract(args.input, args.output, options, every=args.every, workers=args.workers)
    print(summary.text())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and turn a ZooError into one `data error: ...` line and status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except ZooError as error:
        if args.debug or os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false"):
            raise
        print(f"data error: {error}", file=sys.stderr)
        return BAD_INPUT_STATUS


if __name__ == "__main__":
    sys.exit(main())
