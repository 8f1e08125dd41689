"""saxlevel: cardiac short-axis slice level identification (Ho & Kim 2022, Tomography 8:2749)."""

import os as _os

# TensorFlow's C++ start-up chatter (oneDNN notices, missing CUDA driver) drowns the progress bars.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The five slice levels, in anatomical order from the apex to the base (paper section 2.2).
# Never sort these alphabetically: SOTD and ordered decoding depend on this order.
CLASSES: tuple[str, ...] = ("oap", "ap", "mid", "bs", "obs")
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}
# One image of a labels CSV: the subject, its sax_N series (the slice) and the cardiac frame.
LABEL_KEY: list[str] = ["subject", "series", "frame"]
# One stack: a subject's slices at one phase (ED or ES), ordered apex -> base by `order`.
STACK_KEY: list[str] = ["subject", "phase"]

__version__ = "0.1.0"
