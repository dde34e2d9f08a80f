"""Training and evaluating the segmentation model θ_r of each round (SPEC §3 "Segmentation model").

θ_r is trained from scratch (or from pretrained backbone weights) on the train
labels after round r, with cross-entropy that ignores void (255) pixels. The
recipe (optimizer, lr, batch, crop, iterations, augmentation) is data: one entry
per (dataset kind, model family) in :data:`RECIPES`, every field overridable by
``cfg.train`` (and so by the CLI). The paper's recipe: SGD momentum 0.9, weight
decay 1e-4, backbone lr ×0.1, poly schedule with power 0.9, 30k iterations.

Batches are a deterministic function of (seed, round, iteration): an epoch-wise
permutation of the train images, cut into global batches; under
DistributedDataParallel each rank takes its own slice of every global batch, and
augmentation is seeded per (iteration, position). So a resumed run sees exactly
the data of an uninterrupted one, and ranks never see the same samples.

Artifacts of round r (``ws.artifact(r, ...)``):
    model.pt    the final weights and everything needed to use them (:func:`load_model`)
    model.ckpt  periodic checkpoint for ``--resume`` (removed when training finishes)
    train.json  recipe, training log and timing
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import faults, ui
from .config import Config
from .data.base import VOID
from .errors import A2LCError
from .fingerprint import TrainImages
from .metrics import confusion_matrix, iou_from_confusion, result_json
from .models import IMAGENET_MEAN, build_model, model_spec, to_input
from .round_state import mask_state
from .state import Dataset, paint_labels
from .stage_inputs import StageInputs, given
from .stages import TRAIN, is_current
from .store import load_torch, save_torch, torch_stamp
from .threads import cpu_threads
from .workspace import Workspace, write_json_atomic

MODEL_FORMAT = "a2lc-model"
CKPT_FORMAT = "a2lc-train-checkpoint"
FORMAT_VERSION = 1
PRELOAD_BYTES = 1 << 30  # train sets whose images+labels fit in this are held in memory
PAD_RGB = tuple(int(round(m * 255)) for m in IMAGENET_MEAN)  # padding colour: 0 after normalisation
DEBUG_ENV = "A2LC_DEBUG_SAMPLES"  # directory: each rank writes the sample indices it drew and its final weights


# --------------------------------------------------------------------------- recipes (data)
@dataclass(frozen=True)
class Recipe:
    """The resolved training recipe. ``batch_size`` is global (split across DDP ranks)."""

    optimizer: str
    lr: float
    batch_size: int
    crop: int
    iterations: int
    momentum: float
    weight_decay: float
    backbone_lr_mult: float
    poly_power: float
    scale_min: float
    scale_max: float
    flip: bool
    jitter: float
    bf16: bool
    threads: int | None  # CPU threads while training/evaluating (None: torch's default)


_PAPER = dict(
    optimizer="sgd", lr=0.05, batch_size=8, crop=768, iterations=30000, momentum=0.9, weight_decay=1e-4,
    backbone_lr_mult=0.1, poly_power=0.9, scale_min=1.0, scale_max=1.0, flip=True, jitter=0.0, bf16=True, threads=None,
)
# threads=1: the tiny model's small convolutions gain little from a second thread on 2 cores and lose
# several-fold when the cores are shared (OpenMP barriers wait for descheduled threads); docs/training.md
_TINY = dict(
    optimizer="adam", lr=0.01, batch_size=16, crop=48, iterations=650, momentum=0.9, weight_decay=0.0,
    backbone_lr_mult=1.0, poly_power=0.9, scale_min=1.0, scale_max=1.0, flip=True, jitter=0.0, bf16=True,
    threads=1,
)

# (dataset kind, model family) → recipe. Lookup: exact, then (kind, "*"), then ("*", family).
RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    # the authors' Cityscapes setting: crop 768, batch 8, lr 0.05, crop + colour jitter + flip
    ("cityscapes", "deeplab"): {**_PAPER, "jitter": 0.5},
    # the authors' VOC setting: crop 513, batch 16, lr 0.1, random scale 0.5–2 + crop + flip
    ("voc", "deeplab"): {**_PAPER, "lr": 0.1, "batch_size": 16, "crop": 513, "scale_min": 0.5, "scale_max": 2.0},
    ("folder", "deeplab"): {**_PAPER, "crop": 513, "scale_min": 0.5, "scale_max": 2.0},
    # the built-in benchmark with a paper model: the paper's optimiser, short schedule
    ("synthetic", "deeplab"): {**_PAPER, "batch_size": 8, "crop": 96, "iterations": 2000, "lr": 0.02},
    # the default: the tiny CNN on the built-in benchmark (tuned on 2 CPU cores, docs/training.md)
    ("synthetic", "tiny"): _TINY,
    ("*", "tiny"): {**_TINY, "crop": 256, "iterations": 2000},
    ("*", "deeplab"): {**_PAPER, "crop": 513, "scale_min": 0.5, "scale_max": 2.0},
}


def training_threads(cfg: Config, recipe: Recipe) -> int | None:
    """CPU threads for training now: ``train.threads`` > ``OMP_NUM_THREADS`` (None: leave torch's) > the recipe's.

    Decided when a stage runs, never stored: the recipe saved in ``model.pt`` keeps the recipe's own
    value, so ``acquire``/``evaluate`` later apply their own precedence (:mod:`a2lc_cli.threads`) whatever
    the environment was while training, and a resumed training is not refused for a changed environment.
    """
    if cfg.train.threads is None and os.environ.get("OMP_NUM_THREADS"):
        return None  # the user's OMP_NUM_THREADS wins over the recipe
    return recipe.threads


def resolve_recipe(cfg: Config) -> Recipe:
    """The recipe of ``cfg.train.model`` on ``cfg.source.kind``, with every non-None ``cfg.train`` field applied."""
    family = model_spec(cfg.train.model).family
    kind = cfg.source.kind
    base = RECIPES.get((kind, family)) or RECIPES.get((kind, "*")) or RECIPES[("*", family)]
    values = dict(base)
    t = cfg.train
    for f in fields(Recipe):
        v = getattr(t, f.name, None)
        if v is not None and f.name not in ("flip", "bf16"):
            values[f.name] = v
    values["flip"] = bool(t.flip) and bool(base["flip"])
    values["bf16"] = bool(t.bf16)
    rec = Recipe(**values)
    if rec.scale_max < rec.scale_min:
        raise A2LCError(f"train.scale_max ({rec.scale_max}) is smaller than train.scale_min ({rec.scale_min})")
    return rec


# --------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job (world 1 when run plainly)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise A2LCError(f"environment variable {name}={os.environ.get(name)!r} is not an integer") from None


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun job described by WORLD_SIZE/RANK/LOCAL_RANK (gloo on CPU, nccl on CUDA).

    Without WORLD_SIZE > 1 this does nothing and returns world 1.
    """
    world = _env_int("WORLD_SIZE", 1)
    info = DistInfo(_env_int("RANK", 0), world, _env_int("LOCAL_RANK", 0))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = _want_cuda(device)
        if cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    return info


def shutdown_distributed() -> None:
    """Leave the process group (no-op when none)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def main_rank_lock(ws: Workspace, dist_info: DistInfo) -> Iterator[None]:
    """Rank 0 holds the workspace lock; every rank fails together when it cannot be taken."""
    if not dist_info.active:
        with ws.lock():
            yield
        return
    import torch.distributed as dist

    ctx = ws.lock() if dist_info.is_main else nullcontext()
    error: A2LCError | None = None
    try:
        ctx.__enter__()
    except A2LCError as e:
        error = e
    flag = torch.tensor([0 if error else 1], dtype=torch.int64,
                        device=f"cuda:{dist_info.local_rank}" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    if error is not None:
        raise error
    if int(flag.item()) == 0:
        raise A2LCError(f"rank 0 could not take the lock of workspace {ws.root}")
    try:
        yield
    finally:
        ctx.__exit__(None, None, None)


def _want_cuda(device: str | torch.device | None) -> bool:
    if device is None:
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


def pick_device(device: str | torch.device | None, dist_info: DistInfo = DistInfo()) -> torch.device:
    """The torch device to train/infer on: CUDA when available unless told otherwise (per local rank under DDP)."""
    if device is not None:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise A2LCError(f"unknown device {device!r} (use cpu or cuda)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise A2LCError("--device cuda: no CUDA device is available here")
        if dev.type not in ("cpu", "cuda"):
            raise A2LCError(f"unsupported device {device!r} (use cpu or cuda)")
    else:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", dist_info.local_rank if dist_info.active else torch.cuda.current_device())
    return dev


# --------------------------------------------------------------------------- data
def batch_indices(n: int, batch: int, seed: int, r: int, it: int) -> np.ndarray:
    """(batch,) int64 image indices of global batch ``it``: consecutive slices of per-epoch permutations.

    Epoch e's order is a permutation seeded by (seed, r, e), so the stream is a
    pure function of the iteration (what makes resume exact).
    """
    pos = np.arange(it * batch, (it + 1) * batch, dtype=np.int64)
    epochs, offs = pos // n, pos % n
    out = np.empty(batch, np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, r, int(e), 0xE9]).permutation(n)
        sel = epochs == e
        out[sel] = perm[offs[sel]]
    return out


def augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, *, crop_hw: tuple[int, int],
            recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """Random scale, pad, crop, horizontal flip and colour jitter of one training sample.

    image (H,W,3) uint8, label (H,W) uint8 → image (h,w,3) uint8, label (h,w) uint8 with (h,w) = crop_hw.
    Padding is the mean colour with void labels, so it never contributes to the loss.
    """
    import cv2

    if recipe.scale_max > recipe.scale_min or recipe.scale_min != 1.0:
        s = rng.uniform(recipe.scale_min, recipe.scale_max)
        h, w = label.shape
        nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        if (nh, nw) != (h, w):
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST)
    ch, cw = crop_hw
    h, w = label.shape
    if h < ch or w < cw:
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=PAD_RGB)
        label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=VOID)
        h, w = label.shape
    y = int(rng.integers(0, h - ch + 1))
    x = int(rng.integers(0, w - cw + 1))
    image, label = image[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]
    if recipe.flip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    if recipe.jitter > 0:
        image = _jitter(image, rng, recipe.jitter)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def _jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a factor in [1-s, 1+s]. (h,w,3) uint8 → same."""
    b, c, s = rng.uniform(max(0.0, 1 - strength), 1 + strength, size=3)
    x = image.astype(np.float32) * b
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - grey.mean()) * c + grey.mean()
    grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    x = (x - grey) * s + grey
    return np.clip(x, 0, 255).astype(np.uint8)


class TrainSamples(torch.utils.data.Dataset):
    """Augmented training samples keyed by (image index, augmentation seed).

    Preloaded: images (H,W,3) uint8 and painted labels (H,W) uint8 held in lists.
    Streaming: image from the source and labels painted from dataset.h5 per item
    (dataset.h5 is opened lazily in each worker process).
    source: the train images (:class:`~a2lc_cli.data.base.Source`), checked against dataset.h5.
    """

    def __init__(self, ws: Workspace, source, state, recipe: Recipe, crop_hw: tuple[int, int], *,
                 preload: bool, progress: bool = True):
        self.ds_path = ws.dataset_path
        self.source = source
        self.state = state
        self.recipe = recipe
        self.crop_hw = crop_hw
        self._ds: Dataset | None = None
        self.images: list[np.ndarray] | None = None
        self.labels: list[np.ndarray] | None = None
        with Dataset(self.ds_path) as ds:
            self.read_image = TrainImages.of(self.source, ds)  # checks the names now, each image as read
        if preload:
            with Dataset(self.ds_path) as ds:
                idx = range(ds.n_images)
                if progress:
                    idx = ui.progress(idx, "loading train images")
                pairs = [self._read(ds, i) for i in idx]
            self.images = [p[0] for p in pairs]
            self.labels = [p[1] for p in pairs]

    def _read(self, ds: Dataset, i: int) -> tuple[np.ndarray, np.ndarray]:
        image = self.read_image(i)
        return image, paint_labels(ds, i, self.state)

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["_ds"] = None
        return d

    def __getitem__(self, key: tuple[int, tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
        i, seed = key
        if self.images is not None:
            image, label = self.images[i], self.labels[i]
        else:
            if self._ds is None:
                self._ds = Dataset(self.ds_path)
            image, label = self._read(self._ds, i)
        return augment(image, label, np.random.default_rng(list(seed)), crop_hw=self.crop_hw, recipe=self.recipe)


class _BatchKeys(torch.utils.data.Sampler):
    """Per iteration, this rank's list of (image index, augmentation seed) keys."""

    def __init__(self, n: int, recipe: Recipe, seed: int, r: int, start: int, stop: int, dist_info: DistInfo):
        self.n, self.recipe, self.seed, self.r = n, recipe, seed, r
        self.start, self.stop, self.d = start, stop, dist_info
        self.per_rank = recipe.batch_size // dist_info.world

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        lo = self.d.rank * self.per_rank
        for it in range(self.start, self.stop):
            idx = batch_indices(self.n, self.recipe.batch_size, self.seed, self.r, it)
            yield [(int(idx[j]), (self.seed, self.r, it, j)) for j in range(lo, lo + self.per_rank)]


def _collate(items: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.stack([a for a, _ in items])), torch.from_numpy(np.stack([b for _, b in items]))


# --------------------------------------------------------------------------- loss and optimisation
def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over non-void pixels.

    logits: (B,C,H,W) float; target: (B,H,W) int64 with 255 = void. Void pixels
    contribute neither to the loss nor to its gradient; a batch without any
    valid pixel gives 0 (with a zero gradient) instead of NaN.
    """
    c = logits.shape[1]
    # (B*H*W, C) rows: a view, without a copy, of channels-last logits
    flat = logits.float().permute(0, 2, 3, 1).reshape(-1, c)
    total = F.cross_entropy(flat, target.reshape(-1), ignore_index=VOID, reduction="sum")
    return total / (target != VOID).sum().clamp(min=1)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or Adam with two groups: backbone at lr × backbone_lr_mult, the rest at lr."""
    backbone = {id(p) for p in model.backbone.parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) in backbone], "lr": recipe.lr * recipe.backbone_lr_mult},
        {"params": [p for p in model.parameters() if id(p) not in backbone], "lr": recipe.lr},
    ]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise A2LCError(f"unknown optimizer {recipe.optimizer!r} (sgd or adam)")


def poly_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe) -> torch.optim.lr_scheduler.LambdaLR:
    """lr_t = lr · (1 − t/T)^power (the paper's poly schedule)."""
    total = recipe.iterations
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: max(0.0, 1.0 - t / total) ** recipe.poly_power)


# --------------------------------------------------------------------------- checkpoints
def _seed_everything(seed: int, r: int, rank: int) -> None:
    torch.manual_seed(int(np.random.default_rng([seed, r, 0x5EED]).integers(2**62)))
    np.random.seed((seed * 1_000_003 + r * 101 + rank) % 2**32)


def save_model(path: Path, model: nn.Module, *, model_name: str, class_names: list[str], round: int | None = None,
               inputs: dict | None = None, recipe: dict | None = None, config: dict | None = None,
               log: list | None = None) -> str:
    """Write θ atomically as an a2lc model file (read back by :func:`load_model`). Returns its uid."""
    stamp = torch_stamp("model", inputs)  # kind, uid, created, a2lc_version, inputs: the header of every artifact
    save_torch({
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        **stamp,
        "model": model_name,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "round": round,
        "recipe": recipe or {},
        "config": config or {},
        "pretrained": (config or {}).get("train", {}).get("pretrained"),
        "iterations": (recipe or {}).get("iterations"),
        "log": log or [],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }, path)
    return stamp["uid"]


def load_model(path: Path | str, device: str | torch.device | None = None) -> tuple[nn.Module, dict]:
    """Load a saved θ (``model.pt``): the one place checkpoints are read.

    Returns (model in eval mode on ``device``, info) where info holds ``model``
    (registry name), ``num_classes``, ``class_names``, ``round``, ``uid``,
    ``inputs``, ``recipe``, ``config``, ``iterations``, ``log``, ``created``.
    A missing, truncated, foreign or mismatching file is an A2LCError naming it.
    """
    path = Path(path)
    if not path.exists():
        rnd = re.fullmatch(r"r(\d+)", path.parent.name)  # rounds/rNNN/model.pt: name the round in the hint
        raise A2LCError(f"{path} does not exist; run `a2lc train" + (f" --r {int(rnd[1])}" if rnd else "") + "` first")
    obj = load_torch(path, what="model checkpoint")
    if not isinstance(obj, dict) or obj.get("format") != MODEL_FORMAT:
        raise A2LCError(f"{path}: not an a2lc model file")
    if obj.get("format_version") != FORMAT_VERSION:
        raise A2LCError(f"{path}: model format version {obj.get('format_version')!r} is not supported")
    try:
        model = build_model(str(obj["model"]), int(obj["num_classes"]))
        model.load_state_dict(obj["state_dict"])
    except (KeyError, TypeError) as e:
        raise A2LCError(f"{path}: damaged model file (missing {e})") from None
    except RuntimeError as e:
        raise A2LCError(f"{path}: weights do not fit model {obj.get('model')!r}: "
                        f"{' '.join(str(e).split())[:160]}") from None
    dev = pick_device(device)
    model = model.to(dev).eval().to(memory_format=torch.channels_last)
    info = {k: v for k, v in obj.items() if k != "state_dict"}
    return model, info


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray | torch.Tensor, device: str | torch.device | None = None,
                   *, bf16: bool = True) -> torch.Tensor:
    """(B,H,W,3) uint8 images → (B,C,H,W) float32 logits on ``device`` (bf16 autocast on CUDA, no grad)."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    x = to_input(images, dev, channels_last=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda" and bf16):
        return model(x).float()


# --------------------------------------------------------------------------- training a round
def resume_checkpoint(ws: Workspace, r: int) -> Path:
    """θ_r's periodic checkpoint for ``--resume`` (``model.ckpt`` beside the train stage's ``model.pt``)."""
    return ws.path(TRAIN, r).with_suffix(".ckpt")


def round_inputs(ws: Workspace, ds: Dataset, r: int) -> dict[str, str | None]:
    """uids of what θ_r's labels derive from (dataset, round r's query and LCM corrections): the declared
    inputs of the ``train`` stage (:mod:`a2lc_cli.stages`), None for an absent one."""
    from .stages import TRAIN, current_inputs

    return current_inputs(ws, TRAIN, r)


def _crop_hw(recipe: Recipe, heights: np.ndarray, widths: np.ndarray) -> tuple[int, int]:
    """The crop, shrunk per axis to the largest (scaled) image so uniform small images are not padded."""
    return (min(recipe.crop, int(math.ceil(heights.max() * recipe.scale_max))),
            min(recipe.crop, int(math.ceil(widths.max() * recipe.scale_max))))


def train_round(ws: Workspace, cfg: Config, r: int, *, device: str | torch.device | None = None,
                resume: bool = False, progress: bool = True, stop_at: int | None = None,
                inputs: StageInputs | None = None) -> dict:
    """Train θ_r on the labels after round r and save ``model.pt`` and ``train.json`` (rank 0 only).

    Under torchrun (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel;
    the process group must already be initialised (:func:`init_distributed`).
    resume: continue from ``model.ckpt`` when it exists and matches these inputs and recipe.
    stop_at: stop after that many iterations, leaving a checkpoint and no model.pt
    (interrupting on purpose, for tests of ``--resume``).
    inputs: where the train images come from (:class:`a2lc_cli.stage_inputs.StageInputs`; None: the config's source).
    Returns the summary also written to train.json.
    """
    dist_info = init_distributed(device)
    dev = pick_device(device, dist_info)
    recipe = resolve_recipe(cfg)
    if recipe.batch_size % dist_info.world:
        raise A2LCError(f"batch size {recipe.batch_size} is not divisible by the {dist_info.world} processes")
    per_rank = recipe.batch_size // dist_info.world
    family = model_spec(cfg.train.model).family
    if family == "deeplab" and per_rank < 2 and dev.type != "cuda":
        raise A2LCError(f"{cfg.train.model} needs at least 2 images per process (batch norm in ASPP); "
                        f"batch {recipe.batch_size} over {dist_info.world} processes gives {per_rank}")
    with Dataset(ws.dataset_path) as ds:
        state = mask_state(ws, ds, r)
        applied = [k for k, s in state.rounds_applied if s == "query"]
        if r > 0 and (not applied or applied[-1] != r):
            raise A2LCError(f"round {r} has no answers yet; run `a2lc query --r {r}` first")
        uids = round_inputs(ws, ds, r)  # what model.pt records it was computed from
        n_images, num_classes, class_names = ds.n_images, ds.num_classes, list(ds.classes.names)
        heights, widths = ds.heights.copy(), ds.widths.copy()
        stages = [f"{k}:{s}" for k, s in state.rounds_applied]
    if n_images == 0:
        raise A2LCError(f"{ws.dataset_path} has no train images")
    preload = int((heights * widths).sum()) * 4 <= PRELOAD_BYTES
    crop_hw = _crop_hw(recipe, heights, widths)
    job = _Job(dev, dist_info, recipe, per_rank, state, uids, n_images, num_classes, class_names, stages,
               preload, crop_hw, given(inputs).open_source(cfg))
    _seed_everything(cfg.seed, r, dist_info.rank)
    with cpu_threads(training_threads(cfg, recipe) if dev.type == "cpu" else None):
        return _train(ws, cfg, r, job, resume=resume, progress=progress, stop_at=stop_at)


@dataclass
class _Job:
    """What train_round resolved before the loop."""

    dev: torch.device
    dist_info: DistInfo
    recipe: Recipe
    per_rank: int
    state: Any
    inputs: dict
    n_images: int
    num_classes: int
    class_names: list[str]
    stages: list[str]
    preload: bool
    crop_hw: tuple[int, int]
    source: Any  # the train images


def _train(ws: Workspace, cfg: Config, r: int, job: _Job, *, resume: bool, progress: bool,
           stop_at: int | None) -> dict:
    dev, dist_info, recipe, per_rank, state = job.dev, job.dist_info, job.recipe, job.per_rank, job.state
    inputs, n_images, num_classes, class_names = job.inputs, job.n_images, job.num_classes, job.class_names
    stages, preload, crop_hw = job.stages, job.preload, job.crop_hw
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True

    model = build_model(cfg.train.model, num_classes, pretrained=cfg.train.pretrained).to(dev)
    model = model.to(memory_format=torch.channels_last)  # faster on CUDA and with oneDNN on CPUs
    optimizer = make_optimizer(model, recipe)
    scheduler = poly_schedule(optimizer, recipe)
    ckpt_path = resume_checkpoint(ws, r)
    start, log, elapsed_before = 0, [], 0.0
    if resume and ckpt_path.exists():
        start, log, elapsed_before = _load_checkpoint(ckpt_path, model, optimizer, scheduler, recipe=recipe,
                                                      current=lambda rec: is_current(ws, TRAIN, r, rec),
                                                      model_name=cfg.train.model, world=dist_info.world)
        if progress and dist_info.is_main:
            ui.info(f"resuming θ_{r} from iteration {start} of {recipe.iterations} ({ui.esc(ckpt_path)})")
    elif resume and progress and dist_info.is_main:
        ui.info(f"no checkpoint at {ui.esc(ckpt_path)}; training from the start")
    net: nn.Module = model
    if dist_info.active:
        if cuda:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if cuda else None)

    samples = TrainSamples(ws, job.source, state, recipe, crop_hw, preload=preload, progress=progress and dist_info.is_main)
    if len(samples.source.names("train")) != n_images:
        raise A2LCError(f"the source has {len(samples.source.names('train'))} train images but "
                        f"{ws.dataset_path} has {n_images}; rerun `a2lc pseudolabel --force` or use its workspace")
    stop = recipe.iterations if stop_at is None else min(stop_at, recipe.iterations)
    workers = 0 if preload else cfg.train.workers
    loader = torch.utils.data.DataLoader(
        samples, batch_sampler=_BatchKeys(n_images, recipe, cfg.seed, r, start, stop, dist_info),
        collate_fn=_collate, num_workers=workers, pin_memory=cuda, persistent_workers=False,
        **({"prefetch_factor": 4} if workers else {}))
    debug_dir = os.environ.get(DEBUG_ENV)
    drawn: list[list[int]] = []
    every = cfg.train.checkpoint_every
    log_every = max(1, recipe.iterations // 50)
    net.train()
    t0 = time.perf_counter()
    run_loss, run_n = 0.0, 0
    bar = ui.ProgressBar(f"train θ_{r} ({cfg.train.model})", total=stop - start) if (
        progress and dist_info.is_main) else nullcontext()
    with bar:
        for it, (img, lab) in zip(range(start, stop), loader):
            if debug_dir:
                drawn.append(batch_indices(n_images, recipe.batch_size, cfg.seed, r, it)[
                    dist_info.rank * per_rank:(dist_info.rank + 1) * per_rank].tolist())
            x = to_input(img, dev, channels_last=True)
            y = lab.to(dev, non_blocking=True).long()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and recipe.bf16):
                logits = net(x)
            loss = segmentation_loss(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            run_loss = run_loss + loss.detach()  # a tensor: no device sync per iteration
            run_n += 1
            done = it + 1
            if done % log_every == 0 or done == stop:
                mean = _mean_over_ranks(float(run_loss) / run_n, dev, dist_info)
                log.append({"iteration": done, "loss": round(mean, 5), "lr": optimizer.param_groups[1]["lr"],
                            "seconds": round(elapsed_before + time.perf_counter() - t0, 2)})
                run_loss, run_n = 0.0, 0
            if isinstance(bar, ui.ProgressBar):
                bar.advance(description=f"train θ_{r} ({cfg.train.model}) loss {log[-1]['loss']:.3f}"
                            if log else None)
            if dist_info.is_main and ((every and done % every == 0 and done < recipe.iterations) or done == stop_at):
                _save_checkpoint(ckpt_path, model, optimizer, scheduler, iteration=done, recipe=recipe,
                                 inputs=inputs, model_name=cfg.train.model, world=dist_info.world, log=log,
                                 elapsed=elapsed_before + time.perf_counter() - t0)
            faults.checkpoint("train.iteration")
    seconds = elapsed_before + time.perf_counter() - t0
    if debug_dir:
        _write_debug(Path(debug_dir), dist_info, drawn, model)
    if dist_info.active:
        import torch.distributed as dist

        dist.barrier()
    if stop < recipe.iterations:
        return {"round": r, "stopped_at": stop, "checkpoint": str(ckpt_path)}
    images_seen = (stop - start) * recipe.batch_size
    summary = {
        "round": r,
        "model": cfg.train.model,
        "iterations": recipe.iterations,
        "resumed_from": start or None,
        "final_loss": log[-1]["loss"] if log else None,
        "seconds": round(seconds, 2),
        "images_per_second": round(images_seen / max(time.perf_counter() - t0, 1e-9), 2),
        "device": str(dev),
        "world_size": dist_info.world,
        "preloaded": preload,
        "crop": list(crop_hw),
        "recipe": asdict(recipe),
        "stages": stages,
        "inputs": inputs,
        "path": str(ws.path("train", r)),
        "log": log,
    }
    if dist_info.is_main:
        summary["uid"] = save_model(
            ws.path("train", r), model, model_name=cfg.train.model, class_names=class_names, round=r,
            inputs=inputs, recipe=asdict(recipe), config=cfg.model_dump(mode="json"), log=log)
        write_json_atomic(ws.artifact(r, "train.json"), summary)
        if ckpt_path.exists():
            ckpt_path.unlink()
    return summary


def _mean_over_ranks(value: float, dev: torch.device, dist_info: DistInfo) -> float:
    if not dist_info.active:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return float(t.item()) / dist_info.world


def _save_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, *, iteration: int, recipe: Recipe,
                     inputs: dict, model_name: str, world: int, log: list, elapsed: float) -> None:
    """Everything needed to continue: weights, optimizer, schedule, iteration, RNG state (atomic write)."""
    save_torch({
        "format": CKPT_FORMAT, "format_version": FORMAT_VERSION, "iteration": iteration,
        "model": model_name, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "recipe": asdict(recipe),
        "inputs": inputs, "world_size": world, "log": log, "elapsed": elapsed,
    }, path)


def _results_recipe(recipe: dict | None) -> dict | None:
    """A recipe without its thread count (which changes speed, not what is trained) for comparing checkpoints."""
    return None if recipe is None else {k: v for k, v in recipe.items() if k != "threads"}


def _load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, *, recipe: Recipe,
                     current: Callable[[dict | None], bool], model_name: str, world: int) -> tuple[int, list, float]:
    """Resume from ``model.ckpt``: refused unless it was made with this model, recipe and process count and
    the inputs it recorded are current (``current``: the registry's one staleness check for ``train``,
    :func:`a2lc_cli.stages.is_current`)."""
    obj = load_torch(path, what="training checkpoint", hint="delete it or train without --resume")
    if not isinstance(obj, dict) or obj.get("format") != CKPT_FORMAT:
        raise A2LCError(f"{path}: not an a2lc training checkpoint")
    mismatch = [k for k, a, b in (("model", obj.get("model"), model_name), ("recipe", _results_recipe(obj.get("recipe")), _results_recipe(asdict(recipe))),
                                  ("processes", obj.get("world_size"), world)) if a != b]
    if not current(obj.get("inputs")):
        mismatch.insert(2, "inputs")
    if mismatch:
        raise A2LCError(f"{path}: made with a different {', '.join(mismatch)}; train without --resume to start over")
    model.load_state_dict(obj["state_dict"])
    optimizer.load_state_dict(obj["optimizer"])
    scheduler.load_state_dict(obj["scheduler"])
    torch.set_rng_state(obj["rng"])
    return int(obj["iteration"]), list(obj.get("log", [])), float(obj.get("elapsed", 0.0))


def _write_debug(folder: Path, dist_info: DistInfo, drawn: list[list[int]], model: nn.Module) -> None:
    """Debug aid (env A2LC_DEBUG_SAMPLES=DIR): the indices this rank drew and its final weights."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank{dist_info.rank}-samples.json").write_text(
        json.dumps({"rank": dist_info.rank, "world": dist_info.world, "indices": drawn}))
    save_torch(model.state_dict(), folder / f"rank{dist_info.rank}-weights.pt")


# --------------------------------------------------------------------------- model mIoU
def latest_model_round(ws: Workspace) -> int:
    """The highest round with a ``model.pt``."""
    r = ws.latest_round("train")
    if r is None:
        raise A2LCError(f"no trained model in {ws.root}; run `a2lc train --r 0` first")
    return r


def val_confusion(model: nn.Module, source, num_classes: int, *, batch_size: int | None = None,
                  progress: str | None = None) -> np.ndarray:
    """(C, C+1) confusion of the model's argmax over the source's validation split (rows = ground truth).

    Images of equal size are batched (default: as many as make ≈ 4M pixels, at most 16).
    """
    dev = next(model.parameters()).device
    n = len(source.names("val"))
    conf = np.zeros((num_classes, num_classes + 1), np.int64)
    idx = ui.progress(range(n), progress) if progress else range(n)
    pending: list[tuple[np.ndarray, np.ndarray]] = []

    def flush() -> None:
        logits = predict_logits(model, np.stack([p[0] for p in pending]), dev)
        pred = logits.argmax(1).to(torch.uint8).cpu().numpy()
        for k, (_, gt) in enumerate(pending):
            conf[...] += confusion_matrix(pred[k], gt, num_classes)
        pending.clear()

    for i in idx:
        image, gt = source.image("val", i), source.label("val", i)
        if batch_size is None:
            batch_size = max(1, min(16, (1 << 22) // max(1, image.shape[0] * image.shape[1])))
        if pending and (len(pending) == batch_size or image.shape != pending[0][0].shape):
            flush()
        pending.append((image, gt))
    if pending:
        flush()
    return conf


def evaluate_model_miou(ws: Workspace, r: int | None = None, *, device: str | None = None,
                        batch_size: int | None = None, progress: bool = True, inputs: StageInputs | None = None,
                        **_: Any) -> dict:
    """Model mIoU: θ_r's predictions on the validation split against its ground truth (void ignored).

    The checkpoint is the last one of training (no selection on the reported set).
    batch_size: images per forward pass (default: see :func:`val_confusion`).
    inputs: θ_r's loader and the validation images (:class:`a2lc_cli.stage_inputs.StageInputs`; None: ``model.pt``
    and the config's source).
    Returns the ``--json`` object: metric, round, miou, per_class, coverage, pixel_accuracy,
    checkpoint, model, val_images, stale (the labels θ_r was trained on changed since).
    """
    inputs = given(inputs)
    if r is None:
        r = latest_model_round(ws)
    path = ws.path("train", r)
    model, info = inputs.load_model(path, device)
    dev = next(model.parameters()).device
    cfg = ws.config()
    source = inputs.open_source(cfg)
    names = source.names("val")
    if not names:
        raise A2LCError("model mIoU needs a validation split, and this source has none")
    if not source.has_gt("val"):
        raise A2LCError("model mIoU needs ground truth for the validation split, and this source has none")
    c = int(info["num_classes"])
    if c != source.classes.num_classes:
        raise A2LCError(f"{path}: model has {c} classes but the source has {source.classes.num_classes}")
    from .threads import stage_threads

    with stage_threads("evaluate", cfg, model_threads=(info.get("recipe") or {}).get("threads"), device_type=dev.type):
        conf = val_confusion(model, source, c, batch_size=batch_size,
                             progress=f"model mIoU θ_{r}" if progress else None)
    res = iou_from_confusion(conf)
    stale = not is_current(ws, TRAIN, r, info.get("inputs")) if ws.dataset_path.exists() else None  # status's verdict
    return result_json("model-miou", r, res, list(info.get("class_names") or source.classes.names),
                       checkpoint="last", model=info.get("model"), iterations=info.get("iterations"),
                       val_images=len(names), stale=stale, model_uid=info.get("uid"))


__all__ = ["RECIPES", "Recipe", "DistInfo", "augment", "batch_indices", "evaluate_model_miou", "init_distributed",
           "latest_model_round", "load_model", "main_rank_lock", "make_optimizer", "pick_device", "poly_schedule",
           "predict_logits", "resolve_recipe", "round_inputs", "save_model", "segmentation_loss", "shutdown_distributed",
           "train_round", "val_confusion", "cpu_threads"]
