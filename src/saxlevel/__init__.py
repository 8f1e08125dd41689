"""saxlevel: cardiac short-axis slice level identification (Ho & Kim 2022, Tomography 8:2749)."""

import os as _os

# TensorFlow's C++ start-up chatter (oneDNN notices, missing CUDA driver) drowns the progress bars.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The five slice levels, in anatomical order from the apex to the base (paper section 2.2).
# Never sort these alphabetically: SOTD and ordered decoding depend on this order.
CLASSES: tuple[str, ...] = ("oap", "ap", "mid", "bs", "obs")
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

__version__ = "0.1.0"
