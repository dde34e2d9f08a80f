"""The workspace configuration (``config.json``): every option of every stage, validated.

The file is plain JSON a user may edit. Unknown keys and wrong types are errors
that name the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import A2LCError

CONFIG_SCHEMA_VERSION = 1

SourceKind = Literal["synthetic", "cityscapes", "voc", "folder"]
Preset = Literal["city", "voc"]
Labeler = Literal["simulate", "import", "grounded-sam"]
AcquisitionName = Literal["abc", "sim", "cil", "entropy", "margin", "random"]
QueryUnit = Literal["mask", "pixel"]
MethodPreset = Literal["a2lc", "alc", "a2lc+"]
LCMSelection = Literal["paper", "calibrated"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Strict):
    """Where the images and (optional) ground truth come from."""

    kind: SourceKind = "synthetic"
    root: str | None = None
    preset: Preset = "city"
    n_train: int | None = Field(default=None, gt=0)
    n_val: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, ge=16)
    width: int | None = Field(default=None, ge=16)
    classes_file: str | None = None
    fill_label: int | None = Field(default=None, ge=0, le=255)


class GroundedSamConfig(_Strict):
    """Grounded SAM labeler options (user-supplied checkpoints; nothing is downloaded)."""

    sam_checkpoint: str | None = None
    # vit_h | vit_l | vit_b (the official checkpoints) or a JSON file of SAM architecture fields
    sam_type: str = "vit_h"
    gdino_checkpoint: str | None = None
    # SwinT | SwinB (groundingdino-py's bundled configs) or the path of a config .py file
    gdino_config: str = "SwinT"
    # local BERT folder (config.json + vocab.txt); None: the local Hugging Face cache of bert-base-uncased
    text_encoder: str | None = None
    box_threshold: float = Field(default=0.2, ge=0, le=1)
    # class name -> phrases (synonyms); classes not listed are prompted with their name, [] = not prompted
    prompts: dict[str, list[str]] = Field(default_factory=dict)
    # class name -> box threshold overriding box_threshold
    thresholds: dict[str, float] = Field(default_factory=dict)
    # GroundingDINO input size; None: 512/1024 for Cityscapes, 800/1333 otherwise
    short_side: int | None = Field(default=None, gt=0)
    max_side: int | None = Field(default=None, gt=0)
    nms_iou: float | None = Field(default=None, gt=0, le=1)
    max_boxes: int | None = Field(default=300, gt=0)
    batch_size: int = Field(default=4, gt=0)
    device: str = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"


class PseudolabelConfig(_Strict):
    labeler: Labeler | None = None
    import_dir: str | None = None
    mask_dir: str | None = None
    grounded_sam: GroundedSamConfig = Field(default_factory=GroundedSamConfig)


class TrainConfig(_Strict):
    """Segmentation model and its recipe; ``None`` means the model's/dataset's default."""

    model: str = "tiny"
    pretrained: str | None = None
    iterations: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    crop: int | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0)
    optimizer: Literal["sgd", "adam"] | None = None
    momentum: float | None = Field(default=None, ge=0, lt=1)
    weight_decay: float | None = Field(default=None, ge=0)
    backbone_lr_mult: float | None = Field(default=None, ge=0)
    poly_power: float | None = Field(default=None, ge=0)
    scale_min: float | None = Field(default=None, gt=0)
    scale_max: float | None = Field(default=None, gt=0)
    flip: bool = True
    jitter: float | None = Field(default=None, ge=0, le=1)
    bf16: bool = True
    workers: int = Field(default=0, ge=0)
    threads: int | None = Field(default=None, gt=0)
    checkpoint_every: int | None = Field(default=None, gt=0)


class MethodConfig(_Strict):
    """The correction method: preset plus the ablation switches of paper Table 5."""

    preset: MethodPreset = "a2lc"
    acquisition: AcquisitionName | None = None
    unit: QueryUnit | None = None
    lcm: bool | None = None
    annotator: Literal["gt", "human"] | None = None
    budget: int | None = Field(default=None, gt=0)
    budget_share: float = Field(default=0.04, gt=0, le=1)
    rounds: int = Field(default=5, ge=0)
    feature: Literal["softmax", "embedding"] = "softmax"


class LCMConfig(_Strict):
    """Label correction module ψ (paper Eq. 1–6); defaults are the authors'."""

    epochs: int = Field(default=100, gt=0)
    # train ψ for at least this many optimiser steps (epochs raised as needed). None: the authors'
    # epochs only, so ψ's training shrinks with the budget: their Cityscapes setting (10k answers,
    # batch 8, 100 epochs) is 125,000 steps, the built-in `city` demo (423 answers) 5,300
    min_steps: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=8, gt=0)
    lr: float = Field(default=1e-4, gt=0)
    hidden: list[int] = Field(default_factory=lambda: [256, 128, 64])
    tau: list[float] = Field(default_factory=lambda: [0.99, 0.99, 0.999, 0.9999, 0.9999999])
    alpha: float = Field(default=0.5, ge=0, le=1)
    tail_from: Literal["answers", "dataset"] = "answers"
    # None: the method preset's (round for a2lc, all for a2lc+)
    train_on: Literal["round", "all"] | None = None
    # paper: τ schedule + tail/rarest rules (Eq. 4–6); calibrated: per-class thresholds from
    # cross-fitted answers (docs/lcm-calibrated.md). None: the method preset's (paper for a2lc, calibrated for a2lc+)
    selection: LCMSelection | None = None
    # calibrated selection only: the precision every class's corrections must reach at the lower end of a
    # Wilson interval of level `confidence`, the number of cross-fitting folds, the evidence a class needs
    # for a threshold of its own (else it is pooled with the other such classes), and the answers a class
    # needs to receive any correction
    target_precision: float = Field(default=0.9, gt=0, lt=1)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    folds: int = Field(default=5, ge=2, le=20)
    min_class_evidence: int = Field(default=30, ge=1)
    min_class_answers: int = Field(default=5, ge=1)
    # calibrated selection only: relabel (and count as evidence) only masks where ψ's class is also the
    # segmentation model's own (dominant) prediction for the mask — ψ alone extrapolates outside the
    # answered masks' features (docs/lcm-calibrated.md)
    require_model_agreement: bool = True
    # calibrated selection trains k + 1 ψ's (the fold models and the final one) on all rounds' answers; a
    # larger batch keeps that to seconds on a CPU (the thresholds adapt to ψ's confidence scale, so the
    # recipe need not be the authors'). `epochs` and `min_steps` apply as in the paper mode
    calibrated_batch_size: int = Field(default=64, gt=0)
    calibrated_lr: float = Field(default=1e-3, gt=0)


class Config(_Strict):
    schema_version: int = CONFIG_SCHEMA_VERSION
    seed: int = 0
    source: SourceConfig = Field(default_factory=SourceConfig)
    pseudolabel: PseudolabelConfig = Field(default_factory=PseudolabelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    lcm: LCMConfig = Field(default_factory=LCMConfig)

    def tau_for_round(self, r: int) -> float:
        """τ_r of Eq. 4: the r-th entry of the schedule (1-based), the last one repeated."""
        taus = self.lcm.tau
        return float(taus[min(r, len(taus)) - 1])


PRESETS: dict[str, dict[str, object]] = {
    # the paper's method: ABC acquisition, mask-level query, LCM on
    "a2lc": {"acquisition": "abc", "unit": "mask", "lcm": True},
    # the ALC baseline (Kim et al. 2024): SIM acquisition, pixel-level query with expansion, no LCM
    "alc": {"acquisition": "sim", "unit": "pixel", "lcm": False},
    # beyond the paper: A²LC with the calibrated LCM selection, ψ trained on the answers of all rounds so far
    "a2lc+": {"acquisition": "abc", "unit": "mask", "lcm": True, "lcm_selection": "calibrated", "lcm_train_on": "all"},
}
# the LCM options a preset may set (config key under `lcm` -> PRESETS key); the paper's when it does not
LCM_PRESET_KEYS = {"selection": ("lcm_selection", "paper"), "train_on": ("lcm_train_on", "round")}


def resolve_method(method: MethodConfig) -> dict[str, object]:
    """The method's effective switches: the preset's values overridden by explicit ones."""
    resolved = dict(PRESETS[method.preset])
    for key in ("acquisition", "unit", "lcm"):
        value = getattr(method, key)
        if value is not None:
            resolved[key] = value
    return resolved


def resolve_lcm(cfg: Config) -> dict[str, str]:
    """The LCM's effective ``selection`` and ``train_on``: explicit ``lcm.*`` values, else the method preset's."""
    preset = PRESETS[cfg.method.preset]
    out = {}
    for key, (preset_key, default) in LCM_PRESET_KEYS.items():
        value = getattr(cfg.lcm, key)
        out[key] = value if value is not None else str(preset.get(preset_key, default))
    return out


def load_config(path: Path) -> Config:
    """Read and validate ``config.json``; a missing file gives the defaults."""
    if not path.exists():
        return Config()
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise A2LCError(f"{path}: cannot read config ({e})") from None
    except json.JSONDecodeError as e:
        raise A2LCError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except RecursionError:
        raise A2LCError(f"{path}: JSON nested too deeply to be a config") from None
    return parse_config(raw, where=str(path))


def parse_config(raw: object, *, where: str = "config") -> Config:
    """Validate a config dict; errors name the offending key."""
    if not isinstance(raw, dict):
        raise A2LCError(f"{where}: expected a JSON object at the top level")
    version = raw.get("schema_version", CONFIG_SCHEMA_VERSION)
    if version != CONFIG_SCHEMA_VERSION:
        raise A2LCError(f"{where}: schema_version {version!r} is not supported (this a2lc reads {CONFIG_SCHEMA_VERSION})")
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        n = e.error_count()
        more = f" (and {n - 1} more problem{'s' if n > 2 else ''})" if n > 1 else ""
        value = first.get("input")
        got = f" (got {value!r})" if isinstance(value, (str, int, float, bool)) or value is None else ""
        raise A2LCError(f"{where}: {key}: {first['msg']}{got}{more}") from None


def dump_config(cfg: Config) -> str:
    """The config as pretty JSON text."""
    return json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n"


def set_option(cfg: Config, dotted: str, value: str) -> Config:
    """Return a copy of ``cfg`` with ``section.key`` set from a string (parsed as JSON when possible)."""
    data = cfg.model_dump(mode="json")
    node = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(node, dict) or p not in node:
            raise A2LCError(f"unknown config key {dotted!r}")
        node = node[p]
    if not isinstance(node, dict) or parts[-1] not in node:
        raise A2LCError(f"unknown config key {dotted!r}")
    try:
        node[parts[-1]] = json.loads(value)
    except json.JSONDecodeError:
        node[parts[-1]] = value
    except RecursionError:
        raise A2LCError(f"{dotted}: value nested too deeply") from None
    return parse_config(data, where=f"--set {dotted}")
