"""The workspace configuration (``config.json``): every option of every stage, validated.

The file is plain JSON a user may edit. Unknown keys and wrong types are errors
that name the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import A2LCError
from .textio import json_failure, loads_json, read_text

CONFIG_SCHEMA_VERSION = 1

SourceKind = Literal["synthetic", "cityscapes", "voc", "folder"]
Preset = Literal["city", "voc"]
# default share of all masks queried per round (``method.budget_share`` unset), by dataset
# (a2lc_cli.query.default_budget_share): VOC at the paper's operating point (1,000 of ≈11k real masks ≈ 9%);
# the built-in `city` so that five rounds of budget stay below the round-0 wrong-mask pool (≥ 1.1×, as on
# real VOC); others 4%
BUDGET_SHARE = {"voc": 0.09, "city": 0.02, "other": 0.04}
Labeler = Literal["simulate", "import", "grounded-sam"]
AcquisitionName = Literal["abc", "sim", "cil", "entropy", "margin", "random"]
QueryUnit = Literal["mask", "pixel"]
MethodPreset = Literal["a2lc", "alc", "a2lc+"]
LCMSelection = Literal["paper", "calibrated"]


class _Strict(BaseModel):
    # every float must be finite (no NaN/inf); every number has a range (Field bounds below)
    # strict: an int key takes integers only (not true or 2.0), a bool key true/false only (not 1 or "yes"),
    # a float key numbers only (not true or "0.5"), from config.json and `config set` alike
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, strict=True)


# Bounds of the sizes a2lc can actually run with: generous, but they stop a typo (1e9 rounds,
# a 2**40 batch) from hanging `status` or exhausting memory before a one-line error.
BIG = 10**9
PIXELS = 65536  # image side / crop limit
Threshold = Annotated[float, Field(ge=0, le=1)]
Width = Annotated[int, Field(ge=1, le=65536)]


class SourceConfig(_Strict):
    """Where the images and (optional) ground truth come from."""

    kind: SourceKind = "synthetic"
    root: str | None = None
    preset: Preset | None = "city"  # the built-in benchmark's (synthetic source only; None for real data)
    n_train: int | None = Field(default=None, gt=0, le=BIG)
    n_val: int | None = Field(default=None, gt=0, le=BIG)
    height: int | None = Field(default=None, ge=16, le=PIXELS)
    width: int | None = Field(default=None, ge=16, le=PIXELS)
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
    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    # GroundingDINO input size; None: 512/1024 for Cityscapes, 800/1333 otherwise
    short_side: int | None = Field(default=None, gt=0, le=PIXELS)
    max_side: int | None = Field(default=None, gt=0, le=PIXELS)
    nms_iou: float | None = Field(default=None, gt=0, le=1)
    max_boxes: int | None = Field(default=300, gt=0, le=100000)
    batch_size: int = Field(default=4, gt=0, le=4096)
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
    iterations: int | None = Field(default=None, gt=0, le=BIG)
    batch_size: int | None = Field(default=None, gt=0, le=4096)
    crop: int | None = Field(default=None, gt=0, le=PIXELS)
    lr: float | None = Field(default=None, gt=0, le=100)
    optimizer: Literal["sgd", "adam"] | None = None
    momentum: float | None = Field(default=None, ge=0, lt=1)
    weight_decay: float | None = Field(default=None, ge=0, le=1)
    backbone_lr_mult: float | None = Field(default=None, ge=0, le=100)
    poly_power: float | None = Field(default=None, ge=0, le=100)
    scale_min: float | None = Field(default=None, gt=0, le=100)
    scale_max: float | None = Field(default=None, gt=0, le=100)
    flip: bool = True
    jitter: float | None = Field(default=None, ge=0, le=1)
    bf16: bool = True
    workers: int = Field(default=0, ge=0, le=256)
    threads: int | None = Field(default=None, gt=0, le=1024)
    checkpoint_every: int | None = Field(default=None, gt=0, le=BIG)


class MethodConfig(_Strict):
    """The correction method: preset plus the ablation switches of paper Table 5."""

    preset: MethodPreset = "a2lc"
    acquisition: AcquisitionName | None = None
    unit: QueryUnit | None = None
    lcm: bool | None = None
    annotator: Literal["gt", "human"] | None = None
    budget: int | None = Field(default=None, gt=0, le=BIG)
    # share of all masks per round; None: the dataset's default (BUDGET_SHARE: voc 9%, city 2%, other 4%)
    budget_share: float | None = Field(default=None, gt=0, le=1)
    rounds: int = Field(default=5, ge=0, le=1000)
    feature: Literal["softmax", "embedding"] = "softmax"
    # Eq. 8's KL against a uniform over the labels present in unqueried masks (the authors' code) or
    # over all C classes (the paper's text); see docs/results.md, "Faithful-reproduction switches"
    kl_uniform: Literal["present", "all"] = "present"
    # simulated pixel-level answers (ALC): relabel a mask only when at most half of its pixels already
    # carry their ground-truth class (the authors' ALC code), or always
    pixel_relabel: Literal["at-most-half", "always"] = "at-most-half"


class LCMConfig(_Strict):
    """Label correction module ψ (paper Eq. 1–6); defaults are the authors'."""

    epochs: int = Field(default=100, gt=0, le=10**6)
    # train ψ for at least this many optimiser steps (epochs raised as needed). None: the authors'
    # epochs only, so ψ's training shrinks with the budget: their Cityscapes setting (10k answers,
    # batch 8, 100 epochs) is 125,000 steps, the built-in `city` demo (423 answers) 5,300
    min_steps: int | None = Field(default=None, gt=0, le=BIG)
    batch_size: int = Field(default=8, gt=0, le=65536)
    lr: float = Field(default=1e-4, gt=0, le=100)
    # widths of ψ's hidden layers ([] = a linear classifier)
    hidden: list[Width] = Field(default_factory=lambda: [256, 128, 64], max_length=32)
    # τ_r per round (Eq. 4), each a confidence in [0, 1]; at least one (the last repeats). None: the
    # dataset's schedule (TAU_SCHEDULES: VOC 0.99 in every round, as the authors' VOC scripts;
    # otherwise their Cityscapes schedule)
    tau: Annotated[list[Threshold], Field(min_length=1, max_length=1000)] | None = None
    alpha: float = Field(default=0.5, ge=0, le=1)
    # tail size of Eq. 5: ⌊α·C⌋ (the authors' code: 9 of 19) or ⌈α·C⌉ (10 of 19)
    tail_size: Literal["floor", "ceil"] = "floor"
    # ψ's loss: "ce" = cross-entropy on logits (Eq. 2 as written); "softmax-ce" = cross-entropy applied
    # to ψ's softmax outputs (softmax twice, the authors' code)
    loss: Literal["ce", "softmax-ce"] = "ce"
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
    min_class_evidence: int = Field(default=30, ge=1, le=BIG)
    min_class_answers: int = Field(default=5, ge=1, le=BIG)
    # calibrated selection only: relabel (and count as evidence) only masks where ψ's class is also the
    # segmentation model's own (dominant) prediction for the mask — ψ alone extrapolates outside the
    # answered masks' features (docs/lcm-calibrated.md)
    require_model_agreement: bool = True
    # calibrated selection trains k + 1 ψ's (the fold models and the final one) on all rounds' answers; a
    # larger batch keeps that to seconds on a CPU (the thresholds adapt to ψ's confidence scale, so the
    # recipe need not be the authors'). `epochs` and `min_steps` apply as in the paper mode
    calibrated_batch_size: int = Field(default=64, gt=0, le=65536)
    calibrated_lr: float = Field(default=1e-3, gt=0, le=100)
    # calibrated selection only: ψ's features of an answered mask as that round's acquisition saw them
    # (query-time: from θ_{k−1}, before the answer reached the model, like a never-queried mask's) or
    # from this round's acquisition (current: θ_{r−1} has already been trained on earlier answers)
    evidence_features: Literal["query-time", "current"] = "query-time"
    # calibrated selection only: weight the answered situations toward the never-queried ones by a
    # propensity model of "was queried" (selection bias; docs/lcm-calibrated.md), with this L2 penalty
    reweight: Literal["propensity", "none"] = "propensity"
    reweight_l2: float = Field(default=1.0, ge=0, le=1e6)
    # calibrated selection with reweight=propensity: never correct a never-queried mask whose estimated
    # density ratio p_never/p_answered exceeds this (no answered mask is like it), and give the answered
    # masks beyond it no weight. 9 = propensity trimming at e ∈ [0.1, 0.9] for equal groups. None: no limit
    max_density_ratio: float | None = Field(default=9.0, gt=0, le=1e12)


class ThreadsConfig(_Strict):
    """CPU threads per stage (None: the stage's default, see a2lc_cli/threads.py and docs/performance.md).

    A value here wins over OMP_NUM_THREADS; training's is ``train.threads``.
    """

    acquire: int | None = Field(default=None, gt=0, le=1024)
    lcm_train: int | None = Field(default=None, gt=0, le=1024)
    lcm_correct: int | None = Field(default=None, gt=0, le=1024)
    evaluate: int | None = Field(default=None, gt=0, le=1024)


class Config(_Strict):
    schema_version: int = CONFIG_SCHEMA_VERSION
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    source: SourceConfig = Field(default_factory=SourceConfig)
    pseudolabel: PseudolabelConfig = Field(default_factory=PseudolabelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    lcm: LCMConfig = Field(default_factory=LCMConfig)
    threads: ThreadsConfig = Field(default_factory=ThreadsConfig)

    def tau_schedule(self) -> list[float]:
        """``lcm.tau``, or the dataset's default schedule (:data:`TAU_SCHEDULES`)."""
        if self.lcm.tau is not None:
            return list(self.lcm.tau)
        s = self.source
        voc = (s.kind == "synthetic" and s.preset == "voc") or s.kind == "voc"
        return list(TAU_SCHEDULES["voc" if voc else "cityscapes"])

    def tau_for_round(self, r: int) -> float:
        """τ_r of Eq. 4: the r-th entry of the schedule (1-based), the last one repeated."""
        taus = self.tau_schedule()
        return float(taus[min(r, len(taus)) - 1])


# τ schedules of the authors' scripts: Cityscapes per round; VOC leaves τ at 0.99 in every round
TAU_SCHEDULES: dict[str, tuple[float, ...]] = {
    "cityscapes": (0.99, 0.99, 0.999, 0.9999, 0.9999999),
    "voc": (0.99,),
}


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


def describe_method(method: MethodConfig) -> str:
    """The method in words, named by its effective switches, e.g. ``alc (acquisition sim, pixel-level query,
    LCM off)``; switches that match no preset read ``custom (preset a2lc with ...)``."""
    res = resolve_method(method)
    lcm = ("calibrated" if res.get("lcm_selection") == "calibrated" else "on") if res["lcm"] else "off"
    detail = f"acquisition {res['acquisition']}, {res['unit']}-level query, LCM {lcm}"
    same = [name for name, switches in PRESETS.items() if switches == res]
    if not same:
        return f"custom: preset {method.preset} with changed switches ({detail})"
    if same[0] != method.preset:
        return f"{same[0]} ({detail}; preset {method.preset} with the switches of {same[0]})"
    return f"{same[0]} ({detail})"


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
    raw = loads_json(read_text(path, what="config"), where=str(path))
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
        raise A2LCError(validation_message(e, where)) from None


def validation_message(e: ValidationError, where: str) -> str:
    """One line for a config validation error: ``<where>: <key>: <problem> (got <value>); allowed: <range>``."""
    first = e.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    n = e.error_count()
    more = f" (and {n - 1} more problem{'s' if n > 2 else ''})" if n > 1 else ""
    value = first.get("input")
    shown = json.dumps(value) if isinstance(value, bool) or value is None else repr(value)  # true, not True
    got = f" (got {shown})" if isinstance(value, (str, int, float, bool)) or value is None else ""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and len(got) > 60:
        got = f" (got {value:.6g})" if isinstance(value, float) else f" (got a {len(str(abs(value)))}-digit number)"
    allowed = allowed_range(first["loc"])
    allowed = f"; allowed: {allowed}" if allowed and first["type"] in _RANGE_ERRORS else ""
    return f"{where}: {key}: {first['msg']}{got}{allowed}{more}"


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number", "int_type", "float_type",
                 "too_short", "too_long"}


def allowed_range(loc: tuple) -> str:
    """The range of the config key at ``loc`` (a pydantic error location) as text, e.g.
    ``0 ≤ value ≤ 1000`` or ``1..1000 items``; '' when the key has no bounds."""
    import annotated_types as at
    from types import UnionType
    from typing import Union, get_args, get_origin

    node: object = Config
    meta: list = []
    for part in loc:
        if isinstance(part, str) and isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part)
            if field is None:
                return ""
            meta, node = list(field.metadata), field.annotation
        else:  # a list index or a dict key: the item type, Annotated[type, Field(...)]
            while True:  # the container itself may be Optional[...] or Annotated[list[...], Field(...)]
                if get_origin(node) is Annotated:
                    node = get_args(node)[0]
                elif get_origin(node) in (Union, UnionType) and type(None) in get_args(node):
                    node = next(a for a in get_args(node) if a is not type(None))
                else:
                    break
            args = [a for a in get_args(node) if a is not type(None)]
            item = args[-1] if args else None
            inner = get_args(item)
            meta = [m for x in inner[1:] for m in getattr(x, "metadata", [x])]
            node = inner[0] if inner else item
    lo = next((f"{m.ge} ≤ " for m in meta if isinstance(m, at.Ge)), "") or \
        next((f"{m.gt} < " for m in meta if isinstance(m, at.Gt)), "")
    hi = next((f" ≤ {m.le}" for m in meta if isinstance(m, at.Le)), "") or \
        next((f" < {m.lt}" for m in meta if isinstance(m, at.Lt)), "")
    sizes = [(getattr(m, "min_length", None), getattr(m, "max_length", None)) for m in meta
             if isinstance(m, (at.MinLen, at.MaxLen))]
    if lo or hi:
        return f"{lo}value{hi}"
    if sizes:
        mn = max((a for a, _ in sizes if a is not None), default=0)
        mx = min((b for _, b in sizes if b is not None), default=None)
        return f"{mn}..{mx if mx is not None else ''} items"
    return ""


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
    # One parser for every typed key: the value as JSON (``5``, ``0.5``, ``true``, ``null``, ``[0.9]``), checked
    # strictly against the key's type by the schema (an int key refuses ``true`` and ``2.0``, a bool key ``1``);
    # text that is not JSON, or that only a string key accepts (a path ``123``), is kept as a string.
    try:
        node[parts[-1]] = json.loads(value)
    except json.JSONDecodeError:
        node[parts[-1]] = value
    except (ValueError, RecursionError) as e:  # an integer beyond Python's digit limit, deep nesting
        raise A2LCError(f"--set {dotted}: {json_failure(e)}") from None
    try:
        return parse_config(data, where=f"--set {dotted}")
    except A2LCError:
        if isinstance(node[parts[-1]], str):
            raise
        node[parts[-1]] = value
        try:
            return parse_config(data, where=f"--set {dotted}")
        except A2LCError:
            pass
        raise
