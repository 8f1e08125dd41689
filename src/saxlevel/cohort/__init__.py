"""Cohort-scale prediction: ``saxlevel predict ROOT --out DIR`` over every study of a root, in one process with the
model loaded once, resumable, and on a Dask cluster when one machine is not enough.

Modules: ``roots`` (whether a folder is one study or a root of studies, by its headers), ``run`` (the cohort run:
studies read in worker processes, the network over batches of slices from several studies, per-subject outputs
with a fingerprint so a rerun skips what is done), ``cluster`` (the same work on Dask distributed workers, each
holding the model once), ``summary`` (cohort.csv's rows and the one-page cohort.html).

May import: ``saxlevel`` (``predict``, ``io``, ``parallel``), ``saxlevel.sources``, ``saxlevel.evaluation``. TensorFlow
only through ``saxlevel.predict``'s model loading.
"""
