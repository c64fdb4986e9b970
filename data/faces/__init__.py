"""Face detection, landmarks and alignment for real-face data; more of the pipeline lands later."""
