"""Synthetic cardiac cine SAX phantom in the Kaggle DSB2 layout, and as clinical DICOM or NIfTI datasets.

Modules: ``anatomy`` (the heart and its levels), ``geometry`` (slice planes), ``plan`` (parameters, defects, each
subject's plan), ``generate`` (rendering and writing, make_phantom), ``dicomio`` and ``niftiio`` (the file formats).

May import: ``saxlevel`` (``io``, ``params``). Never TensorFlow (a test checks).
"""

from saxlevel.phantom.generate import make_phantom
from saxlevel.phantom.plan import PhantomParams

__all__ = ["PhantomParams", "make_phantom"]
