"""The real-heart model shipped in the package (realheart/dvc.yaml; docs/real-heart-model.md).

Modules: ``realdata`` (labelled real stacks from ACDC, M&Ms and contour-carrying DICOM; the model's input),
``cavitynet`` (the 2.5-D U-Net that marks the LV cavity), ``runs`` (slice presence and the anatomical decoding: the
most likely single run of LV slices), ``realtrain`` (folds, validation, calibration, the saved model),
``modelcard`` (MODEL_CARD.md from the committed metrics).

May import: ``saxlevel``, ``saxlevel.sources``, ``saxlevel.ingest``, ``saxlevel.evaluation``. Imports TensorFlow
lazily (``cavitynet``).
"""
