"""From the index to image stacks: ED/ES frames, windowing, the PNG stacks, levels from segmentations and
contours, and the subject-wise split.

Modules: ``phases`` (ED/ES from the images and the trigger), ``images`` (pixels, windowing, PNG files), ``pngs``
(the to_png stage's stacks), ``seglevels`` (consensus-thirds levels from LV-cavity areas), ``contours`` (expert
contour files, e.g. Sunnybrook's), ``splits`` (train/validate/test by subject, the labels CSV).

May import: ``saxlevel`` (``io``, ``params``, ``parallel``) and ``saxlevel.sources``. Never TensorFlow (a test checks).
"""
