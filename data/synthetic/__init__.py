"""Synthetic cartoon faces with known identity, expression and pose, so face swaps have a ground truth.

A real swap (person B's face driven by person A's frame) has no true answer to compare against; here
it does: `swap_ground_truth(id_b, (expression_a, pose_a), size)` renders B with A's expression and pose.

Geometry lives in normalised units: the image spans [-1, 1] on both axes (x right, y down, pixel
centres at (j + 0.5) * 2 / size - 1), and the face is drawn in a face frame (head centre at 0, y down)
that the pose rolls, scales and shifts into the image. Every shape is an implicit function of the
pixel centre whose edge is smoothstepped over one pixel, so a face looks the same at any size
(32..256 px) up to resampling, and a 2x render area-averaged down matches the 1x render.

Parameter vectors (float32, in this order), as the `SyntheticFaces` source yields them:
  expression = EXPRESSION_FIELDS = (mouth_open 0..1, smile -1..1, eye_open 0..1, brow_raise -1..1)
  pose       = POSE_FIELDS = (roll degrees, yaw -1..1, shift_x, shift_y (image units), scale,
                              light_angle degrees, light_strength 0..0.3)
`Expression.from_vector` / `Pose.from_vector` turn such rows back into parameters for `render`.

Modules, one job each: `params` (the parameter types), `sampling` (seeded identities, expressions
and poses, and smooth clip trajectories), `raster` (anti-aliased shape coverage and the pose frame),
`render` (faces and masks), `source` (the `SyntheticFaces` source and its spec parser `from_spec`)
and `clips` (talking clips: `SyntheticClips`, the `synthetic_clips:` spec's `clips_from_spec`, and
`reenact_truth`).
"""

from data.synthetic.clips import SyntheticClips, reenact_truth
from data.synthetic.clips import from_spec as clips_from_spec
from data.synthetic.params import EXPRESSION_FIELDS, HAIR_STYLES, POSE_FIELDS, Expression, Identity, Pose
from data.synthetic.render import eyes_mouth_mask, face_mask, face_masks, render, swap_ground_truth
from data.synthetic.sampling import (
    clip_expression_pose,
    identity,
    indexed_expression_pose,
    random_expression_pose,
)
from data.synthetic.source import SyntheticFaces, from_spec

_indexed_expression_pose = indexed_expression_pose  # the name tests/test_pairs.py reads

__all__ = [
    "EXPRESSION_FIELDS",
    "HAIR_STYLES",
    "POSE_FIELDS",
    "Expression",
    "Identity",
    "Pose",
    "SyntheticClips",
    "SyntheticFaces",
    "clip_expression_pose",
    "clips_from_spec",
    "eyes_mouth_mask",
    "face_mask",
    "face_masks",
    "from_spec",
    "identity",
    "indexed_expression_pose",
    "random_expression_pose",
    "reenact_truth",
    "render",
    "swap_ground_truth",
]
