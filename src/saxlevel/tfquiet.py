"""Import TensorFlow without its start-up chatter on machines without a GPU.

TensorFlow writes to the C-level stderr while it loads and probes for CUDA, partly before its own logging
is set up, so TF_CPP_MIN_LOG_LEVEL cannot silence it: "Could not find cuda drivers", "failed call to
cuInit", the oneDNN and CPU-instruction notices. Those known lines are dropped; anything else TensorFlow
writes meanwhile is passed on unchanged."""

from __future__ import annotations

import os
import sys
import tempfile

NOISE = ("absl::InitializeLog", "oneDNN custom operations", "Could not find cuda drivers", "failed call to cuInit",
         "cpu_feature_guard", "To enable the following instructions", "rebuild TensorFlow with the appropriate",
         "Unable to register cuDNN", "Unable to register cuFFT", "Unable to register cuBLAS",
         "computation placer already registered", "TF-TRT Warning", "This TensorFlow binary is optimized")


def import_tensorflow() -> None:
    """Import tensorflow (and probe its devices) once, filtering its known start-up noise from stderr; any GPU
    is set to allocate memory as needed."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            import tensorflow as tf

            # A GPU is used with no change when TensorFlow sees one; growing its memory on demand lets
            # parallel queued experiments (dvc queue start --jobs N) share it instead of the first taking all.
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    kept = [line for line in text.splitlines() if line.strip() and not any(n in line for n in NOISE)]
    if kept:
        print("\n".join(kept), file=sys.stderr)
