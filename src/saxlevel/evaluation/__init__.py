"""Scoring predictions: metrics, decoding, Table 5, coverage and the AHA assignment, figures and the evaluate report.

Modules: ``metrics`` (accuracy, SOTD, confidence intervals), ``decode`` (argmax and ordered decoding), ``table5``
(the predictions-file contract, Table 5 per model and decoding, paired comparisons), ``coverage`` (LV coverage and
AHA levels from a stack's levels), ``figures`` (Figures 2-5), ``report`` (the evaluate stage's outputs).

May import: ``saxlevel`` (``catalog``, ``io``, ``params``) and ``saxlevel.ingest``. Never TensorFlow and never
``saxlevel.learning`` (a test checks): evaluation knows the predictions file, not how it was made.
"""
