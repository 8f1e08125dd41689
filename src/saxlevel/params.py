"""Typed, validated access to params.yaml (every error names the key and the fix).

params.yaml is the single source of defaults: each stage reads one typed settings object from it, and a
missing or ill-typed key is a ParamError naming the key. Command-line flags of a stage script override."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from saxlevel.catalog import BACKBONES as SPECS
from saxlevel.catalog import BATCHNORM_MODES as BATCHNORM
from saxlevel.catalog import FINETUNE_MODES as MODES
from saxlevel.catalog import HEADS
from saxlevel.evaluation.decode import DECODERS

BACKBONES = tuple(SPECS)


class ParamError(ValueError):
    """A parameter in params.yaml (or on the command line) is missing or invalid."""


def load(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read params.yaml; a missing file is a clear error."""
    path = Path(path)
    if not path.exists():
        raise ParamError(f"{path} not found: run from the repository root or pass --params PATH")
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ParamError(f"{path}: expected a mapping at the top level")
    return data


def get(params: dict[str, Any], dotted: str, default: Any = ...) -> Any:
    """Look up ``a.b.c``; without a default a missing key is a ParamError naming it."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is ...:
                raise ParamError(f"params.yaml: missing key '{dotted}'")
            return default
        node = node[part]
    return node


def as_list(value: Any, key: str) -> list[str]:
    """A YAML list of names; a bare string is the common `-S grid.heads=bigru` mistake."""
    if isinstance(value, str):
        raise ParamError(
            f"params.yaml: '{key}' must be a list, got the string {value!r}; "
            f"write it as a YAML list, e.g. dvc exp run -S '{key}=[{value}]'"
        )
    if not isinstance(value, list) or not value:
        raise ParamError(f"params.yaml: '{key}' must be a non-empty list, got {value!r}")
    return [str(v) for v in value]


def grid(params: dict[str, Any]) -> tuple[list[str], list[str]]:
    """grid.backbones and grid.heads, validated against the known names."""
    backbones = as_list(get(params, "grid.backbones"), "grid.backbones")
    heads = as_list(get(params, "grid.heads"), "grid.heads")
    for name in backbones:
        if name not in BACKBONES:
            raise ParamError(f"params.yaml: grid.backbones has unknown backbone {name!r}; choose from {BACKBONES}")
    for name in heads:
        if name not in HEADS:
            raise ParamError(f"params.yaml: grid.heads has unknown head {name!r}; choose from {HEADS}")
    return backbones, heads


def selected_model(params: dict[str, Any]) -> tuple[str, str]:
    """The selected (backbone, head); it must be one of the models the grid trains."""
    backbones, heads = grid(params)
    backbone, head = str(get(params, "backbone")), str(get(params, "head"))
    if backbone not in backbones or head not in heads:
        raise ParamError(
            f"params.yaml: selected model {backbone}-{head} is not in the grid "
            f"(grid.backbones={backbones}, grid.heads={heads}); pick one of those or add it to the grid"
        )
    return backbone, head


FINETUNE_SECTION = "finetune_grid"
# Keys of `train` that finetune_grid may override for its models (image_size is its own: the paper grid
# fine-tunes, if asked to, at features.image_size).
TRAIN_KEYS = ("epochs", "patience", "lr", "seed", "max_slices", "finetune", "augment", "batchnorm", "bn_momentum")


@dataclass(frozen=True)
class TrainSettings:
    """How one grid's models train: train.* for the paper's grid, finetune_grid.* over train.* for the other."""

    section: str
    epochs: int
    patience: int
    lr: float
    seed: int
    max_slices: int
    finetune: str
    augment: bool
    batchnorm: str
    bn_momentum: float
    image_size: int
    weights: str
    bn_images: int

    @property
    def cached(self) -> bool:
        """Frozen backbone and no augmentation: the head trains on the feature cache (the paper)."""
        return self.finetune == "none" and not self.augment

    @property
    def batchnorm_trains(self) -> bool:
        """Train BatchNorm statistics? auto: only for random weights (nothing pretrained to keep)."""
        if self.finetune == "none":
            return False
        return self.weights == "none" if self.batchnorm == "auto" else self.batchnorm == "train"

    @property
    def suffix(self) -> str:
        """Model-name suffix in Table 5: '' for the paper's grid, '-ft' for finetune_grid's models."""
        return "-ft" if self.section == FINETUNE_SECTION else ""


def _typed(value: Any, kind: type, key: str) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ParamError(f"params.yaml: '{key}' must be true or false, got {value!r}")
        return value
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ParamError(f"params.yaml: '{key}' must be a {kind.__name__}, got {value!r}") from None


WEIGHTS_OVERRIDE = "features.backbone_weights"


def weights_for(params: dict[str, Any], backbone: str | None = None) -> str:
    """The weights a backbone starts from: features.backbone_weights.BACKBONE where given, else
    features.weights ('imagenet', 'none' or a weights file). The override lets EfficientNet-Lite0 use its
    installable ImageNet weights while Keras' four stay random offline."""
    default = str(get(params, "features.weights"))
    overrides = get(params, WEIGHTS_OVERRIDE, {}) or {}
    if not isinstance(overrides, dict):
        raise ParamError(f"params.yaml: '{WEIGHTS_OVERRIDE}' must map backbone names to weights, e.g. "
                         f"{{efficientnetlite0: imagenet}}; got {overrides!r}")
    for name in overrides:
        if name not in BACKBONES:
            raise ParamError(f"params.yaml: '{WEIGHTS_OVERRIDE}' names unknown backbone {name!r}; "
                             f"choose from {BACKBONES}")
    if backbone is None:
        return default
    return str(overrides.get(backbone, default))


def train_settings(params: dict[str, Any], section: str = "train", backbone: str | None = None) -> TrainSettings:
    """The training settings of ``section`` ('train' or 'finetune_grid') for ``backbone`` (its weights),
    typed and validated."""
    if section not in ("train", FINETUNE_SECTION):
        raise ParamError(f"unknown training section {section!r}; use 'train' or '{FINETUNE_SECTION}'")
    kinds = {"epochs": int, "patience": int, "lr": float, "seed": int, "max_slices": int, "finetune": str,
             "augment": bool, "batchnorm": str, "bn_momentum": float}
    values: dict[str, Any] = {}
    for key, kind in kinds.items():
        dotted = f"train.{key}"
        raw = get(params, dotted)
        if section == FINETUNE_SECTION and key in get(params, section):
            dotted, raw = f"{section}.{key}", get(params, f"{section}.{key}")
        values[key] = _typed(raw, kind, dotted)
    where = section if section == FINETUNE_SECTION else "train"
    if values["finetune"] not in MODES:
        raise ParamError(f"params.yaml: '{where}.finetune' must be one of {MODES}, got {values['finetune']!r}")
    if values["batchnorm"] not in BATCHNORM:
        raise ParamError(f"params.yaml: '{where}.batchnorm' must be one of {BATCHNORM}, got {values['batchnorm']!r}")
    if not 0.0 <= values["bn_momentum"] < 1.0:
        raise ParamError(f"params.yaml: '{where}.bn_momentum' must be in [0, 1), got {values['bn_momentum']}")
    size_key = f"{section}.image_size" if section == FINETUNE_SECTION else "features.image_size"
    return TrainSettings(section=section, **values, image_size=_typed(get(params, size_key), int, size_key),
                         weights=weights_for(params, backbone),
                         bn_images=_typed(get(params, "features.bn_images"), int, "features.bn_images"))


def finetune_grid(params: dict[str, Any]) -> tuple[list[str], list[str]]:
    """finetune_grid.backbones and .heads (may be empty lists: no fine-tuned models)."""
    out: list[list[str]] = []
    for kind, known in (("backbones", BACKBONES), ("heads", HEADS)):
        key = f"{FINETUNE_SECTION}.{kind}"
        value = get(params, key)
        if value == []:
            out.append([])
            continue
        names = as_list(value, key)
        for name in names:
            if name not in known:
                raise ParamError(f"params.yaml: {key} has unknown name {name!r}; choose from {known}")
        out.append(names)
    return out[0], out[1]


def _whole(value: Any, key: str, minimum: int = 1) -> int:
    """A whole number >= ``minimum`` (an int, or digits given on the command line)."""
    whole = isinstance(value, int) and not isinstance(value, bool) or isinstance(value, str) and value.isdigit()
    if not whole or int(value) < minimum:
        need = "a positive integer" if minimum == 1 else f"a whole number >= {minimum}"
        raise ParamError(f"params.yaml: '{key}' must be {need}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class FilterSettings:
    """filter_dicom's parameters (params.yaml ``filter``)."""

    policy: str
    jobs: int


def filter_settings(params: dict[str, Any], policy: str | None = None, jobs: int | None = None) -> FilterSettings:
    """filter.policy ('paper' or 'repair') and filter.jobs, command-line values first."""
    policy = str(policy if policy is not None else get(params, "filter.policy"))
    if policy not in ("paper", "repair"):
        raise ParamError(f"params.yaml: 'filter.policy' must be 'paper' or 'repair', got {policy!r}")
    return FilterSettings(policy, _whole(jobs if jobs is not None else get(params, "filter.jobs"), "filter.jobs"))


@dataclass(frozen=True)
class PngSettings:
    """to_png's parameters (params.yaml ``to_png``)."""

    ed_frame: int | str
    es_frame: int | str
    window: tuple[float, float]
    jobs: int


def _frame_choice(value: Any, key: str) -> int | str:
    if str(value) == "auto":
        return "auto"
    if isinstance(value, bool):
        raise ParamError(f"params.yaml: '{key}' must be a frame number or 'auto', got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ParamError(f"params.yaml: '{key}' must be a frame number or 'auto', got {value!r}") from None


def png_settings(params: dict[str, Any], ed_frame: Any = None, es_frame: Any = None,
                 jobs: int | None = None) -> PngSettings:
    """to_png.ed_frame / es_frame ('auto' or a number), window ([low, high] percentiles) and jobs."""
    ed = _frame_choice(ed_frame if ed_frame is not None else get(params, "to_png.ed_frame"), "to_png.ed_frame")
    es = _frame_choice(es_frame if es_frame is not None else get(params, "to_png.es_frame"), "to_png.es_frame")
    raw = get(params, "to_png.window")
    try:
        window = tuple(float(x) for x in raw) if isinstance(raw, (list, tuple)) else ()
    except (TypeError, ValueError):
        window = ()
    if len(window) != 2 or not 0 <= window[0] < window[1] <= 100:
        raise ParamError(f"params.yaml: 'to_png.window' must be [low, high] percentiles with 0 <= low < high <= 100, "
                         f"e.g. [2, 98]; got {raw!r}")
    n = _whole(jobs if jobs is not None else get(params, "to_png.jobs"), "to_png.jobs")
    return PngSettings(ed, es, (window[0], window[1]), n)


def typed(params: dict[str, Any], key: str, kind: type) -> Any:
    """The value at dotted ``key`` as ``kind`` (a ParamError names a missing or ill-typed key)."""
    return _typed(get(params, key), kind, key)


def typed_or(params: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """The value at dotted ``key`` as ``kind``, ``default`` where the key is absent (an option added later)."""
    value = get(params, key, None)
    return default if value is None else _typed(value, kind, key)


@dataclass(frozen=True)
class SplitSettings:
    """split's parameters (``split`` and ``data.labels``)."""

    labels: str
    seed: int
    ratios: tuple[float, ...]


def split_settings(params: dict[str, Any], labels: str | None = None, seed: int | None = None) -> SplitSettings:
    """data.labels, split.seed and split.ratios (train, val, test; positive)."""
    raw = get(params, "split.ratios")
    try:
        ratios = tuple(float(r) for r in raw) if isinstance(raw, list) else ()
    except (TypeError, ValueError):
        ratios = ()
    if len(ratios) != 3 or min(ratios) <= 0:
        raise ParamError(f"params.yaml: 'split.ratios' must be 3 positive numbers (train, val, test), got {raw!r}")
    return SplitSettings(str(labels if labels is not None else get(params, "data.labels")),
                         _typed(seed if seed is not None else get(params, "split.seed"), int, "split.seed"), ratios)


@dataclass(frozen=True)
class FeatureSettings:
    """extract's parameters (``features``)."""

    weights: str
    image_size: int
    batch_size: int
    bn_images: int
    seed: int


def feature_settings(params: dict[str, Any], backbone: str | None = None) -> FeatureSettings:
    """The backbone's weights (imagenet, none or a weights file; see weights_for), features.image_size,
    batch_size, bn_images, seed."""
    return FeatureSettings(weights_for(params, backbone),
                           _whole(get(params, "features.image_size"), "features.image_size"),
                           _whole(get(params, "features.batch_size"), "features.batch_size"),
                           _whole(get(params, "features.bn_images"), "features.bn_images"),
                           typed(params, "features.seed", int))



@dataclass(frozen=True)
class EvaluateSettings:
    """evaluate's parameters: both grids, the selected model and ``evaluate``."""

    backbones: list[str]
    heads: list[str]
    selected: tuple[str, str]
    finetune_backbones: list[str]
    finetune_heads: list[str]
    paper: TrainSettings
    finetuned: TrainSettings | None
    decode: str
    bootstrap: int
    seed: int
    figure3_subjects: int
    weights: dict[str, str]  # each backbone's weights (weights_for)


def evaluate_settings(params: dict[str, Any]) -> EvaluateSettings:
    """Everything evaluate reads, typed and validated."""
    backbones, heads = grid(params)
    ft_backbones, ft_heads = finetune_grid(params)
    how = str(get(params, "evaluate.decode"))
    if how not in DECODERS:
        raise ParamError(f"params.yaml: 'evaluate.decode' must be one of {DECODERS}, got {how!r}")
    return EvaluateSettings(
        backbones, heads, selected_model(params), ft_backbones, ft_heads, train_settings(params, "train"),
        train_settings(params, FINETUNE_SECTION) if ft_backbones and ft_heads else None, how,
        _whole(get(params, "evaluate.bootstrap"), "evaluate.bootstrap", minimum=0), typed(params, "evaluate.seed", int),
        _whole(get(params, "evaluate.figure3_subjects"), "evaluate.figure3_subjects", minimum=0),
        {b: weights_for(params, b) for b in dict.fromkeys(backbones + ft_backbones)})
