"""Building and loading the two Grounded SAM networks from user-supplied files (the one place that does).

* SAM (``segment_anything``): an architecture spec — ``vit_h`` / ``vit_l`` / ``vit_b``
  (the official checkpoints ``sam_vit_{h,l,b}_*.pth``) or a JSON file of
  :class:`SamSpec` fields (small models for tests) — built from
  ``segment_anything.modeling`` exactly as ``sam_model_registry`` builds it.
* GroundingDINO (``groundingdino-py``): one of its bundled configs by name
  (``SwinT`` = ``GroundingDINO_SwinT_OGC.py``, ``SwinB`` = ``GroundingDINO_SwinB_cfg.py``)
  or the path of a config file of the same format; the BERT text encoder comes
  from a local folder (``config.json`` + ``vocab.txt``/``tokenizer.json``), never
  from a model hub. Its weights are part of the GroundingDINO checkpoint; the
  folder's own weights are used only if the checkpoint lacks them.

Every checkpoint is checked key by key and shape by shape against the model
built from the spec, so a wrong ``--sam-type`` or config gives a one-line
:class:`A2LCError` naming the file before any image is processed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ...errors import A2LCError
from ...textio import read_text

# --------------------------------------------------------------------------- SAM
@dataclass(frozen=True)
class SamSpec:
    """SAM's architecture hyper-parameters (defaults: the official models' fixed ones)."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256


SAM_TYPES: dict[str, SamSpec] = {
    # as segment_anything.build_sam.sam_model_registry builds them
    "vit_h": SamSpec(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamSpec(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamSpec(768, 12, 12, (2, 5, 8, 11)),
}
_SAM_WIDTH = {s.encoder_embed_dim: name for name, s in SAM_TYPES.items()}


def resolve_sam_spec(sam_type: str) -> SamSpec:
    """A SAM spec from a registry name (``vit_h``...) or a JSON file of :class:`SamSpec` fields."""
    if sam_type in SAM_TYPES:
        return SAM_TYPES[sam_type]
    path = Path(sam_type).expanduser()
    if not path.suffix == ".json":
        raise A2LCError(f"unknown SAM type {sam_type!r} (choose from {', '.join(SAM_TYPES)} or a JSON spec file)")
    if not path.is_file():
        raise A2LCError(f"SAM spec file {path} does not exist")
    try:
        raw = json.loads(read_text(path, what="SAM spec"))
    except json.JSONDecodeError as e:
        raise A2LCError(f"{path}: not a readable JSON SAM spec ({_short(e)})") from None
    names = {f.name for f in dataclasses.fields(SamSpec)}
    if not isinstance(raw, dict) or set(raw) - names:
        bad = sorted(set(raw) - names) if isinstance(raw, dict) else ["(not an object)"]
        raise A2LCError(f"{path}: unknown SAM spec key {bad[0]!r} (known: {', '.join(sorted(names))})")
    try:
        raw["encoder_global_attn_indexes"] = tuple(int(i) for i in raw.get("encoder_global_attn_indexes", ()))
        spec = SamSpec(**{k: (v if k == "encoder_global_attn_indexes" else int(v)) for k, v in raw.items()})
    except (TypeError, ValueError) as e:
        raise A2LCError(f"{path}: bad SAM spec ({_short(e)})") from None
    return spec


def build_sam(spec: SamSpec) -> torch.nn.Module:
    """A randomly initialised ``segment_anything.modeling.Sam`` of the given architecture (eval mode)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    emb = spec.image_size // spec.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=spec.encoder_depth,
            embed_dim=spec.encoder_embed_dim,
            img_size=spec.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=spec.encoder_num_heads,
            patch_size=spec.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=spec.encoder_global_attn_indexes,
            window_size=spec.window_size,
            out_chans=spec.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=spec.prompt_embed_dim,
            image_embedding_size=(emb, emb),
            input_image_size=(spec.image_size, spec.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=spec.decoder_depth,
                embedding_dim=spec.prompt_embed_dim,
                mlp_dim=spec.decoder_mlp_dim,
                num_heads=spec.decoder_num_heads,
            ),
            transformer_dim=spec.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=spec.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def load_sam(checkpoint: Path, sam_type: str) -> torch.nn.Module:
    """Build SAM from ``sam_type`` and load ``checkpoint`` into it, checking every key and shape."""
    spec = resolve_sam_spec(sam_type)
    sd = read_state_dict(checkpoint, what="SAM")
    if any(k.startswith("backbone.") or k.startswith("bert.") for k in sd):
        raise A2LCError(f"{checkpoint}: this is a GroundingDINO checkpoint, not a SAM one (swap --sam-checkpoint and --gdino-checkpoint?)")
    w = sd.get("image_encoder.patch_embed.proj.weight")
    if w is not None and w.shape[0] != spec.encoder_embed_dim:  # fail before building a large model
        guess = _SAM_WIDTH.get(int(w.shape[0]))
        raise A2LCError(
            f"{checkpoint}: does not match SAM --sam-type {sam_type}: the file's encoder width is "
            f"{w.shape[0]}, {sam_type} has {spec.encoder_embed_dim}" + (f" — try --sam-type {guess}" if guess else "")
        )
    with _quiet():
        model = build_sam(spec)
    load_checked(model, sd, path=checkpoint, what=f"SAM --sam-type {sam_type}")
    return model


# --------------------------------------------------------------------------- GroundingDINO
GDINO_CONFIGS: dict[str, str] = {
    "swint": "GroundingDINO_SwinT_OGC.py",
    "swinb": "GroundingDINO_SwinB_cfg.py",
}
_SWIN_WIDTH = {96: "SwinT", 128: "SwinB"}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def resolve_gdino_config(name_or_path: str) -> Path:
    """The config file of a bundled GroundingDINO config name (``SwinT``/``SwinB``) or a path to one."""
    key = name_or_path.lower().replace("-", "").replace("_", "")
    if key in GDINO_CONFIGS:
        import groundingdino

        return Path(groundingdino.__file__).parent / "config" / GDINO_CONFIGS[key]
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise A2LCError(f"GroundingDINO config {name_or_path!r} is neither SwinT/SwinB nor an existing file")
    if path.suffix != ".py":
        raise A2LCError(f"GroundingDINO config {path} must be a .py file like groundingdino's bundled configs")
    return path


def check_text_encoder(folder: Path) -> Path:
    """Validate a local BERT folder: ``config.json`` and a vocabulary (``vocab.txt`` or ``tokenizer.json``)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise A2LCError(f"text encoder folder {folder} does not exist (a local bert-base-uncased folder; see docs/grounded-sam.md)")
    if not (folder / "config.json").is_file():
        raise A2LCError(f"text encoder folder {folder} has no config.json")
    if not ((folder / "vocab.txt").is_file() or (folder / "tokenizer.json").is_file()):
        raise A2LCError(f"text encoder folder {folder} has no vocab.txt or tokenizer.json")
    return folder


def find_cached_bert() -> Path | None:
    """The local Hugging Face cache snapshot of ``bert-base-uncased``, if one exists (nothing is fetched)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    found = try_to_load_from_cache("bert-base-uncased", "config.json")
    if isinstance(found, str) and os.path.isfile(found):
        folder = Path(found).parent
        if (folder / "vocab.txt").is_file() or (folder / "tokenizer.json").is_file():
            return folder
    return None


@contextlib.contextmanager
def _bert_from_folder_config() -> Iterator[None]:
    """Make groundingdino build its BERT from the local folder's config (weights come from the checkpoint).

    groundingdino-py calls ``BertModel.from_pretrained(text_encoder_type)``, which
    needs weight files; the GroundingDINO checkpoint carries the text encoder's
    weights anyway, so a folder with config + vocabulary suffices.
    """
    from groundingdino.util import get_tokenlizer
    from transformers import BertConfig, BertModel

    original = get_tokenlizer.get_pretrained_language_model

    def from_config(text_encoder_type: str) -> torch.nn.Module:
        return BertModel(BertConfig.from_pretrained(text_encoder_type, local_files_only=True))

    get_tokenlizer.get_pretrained_language_model = from_config
    try:
        yield
    finally:
        get_tokenlizer.get_pretrained_language_model = original


def build_gdino(config: Path, text_encoder: Path) -> torch.nn.Module:
    """A randomly initialised GroundingDINO from a config file and a local BERT folder (eval mode)."""
    with _quiet():  # importing groundingdino warns about timm's deprecated layout
        from groundingdino.models import build_model
        from groundingdino.util.slconfig import SLConfig
    try:
        args = SLConfig.fromfile(str(config))
    except (OSError, SyntaxError, ImportError, ValueError, KeyError) as e:
        raise A2LCError(f"{config}: not a readable GroundingDINO config ({_short(e)})") from None
    args.text_encoder_type = str(text_encoder)
    args.device = "cpu"
    args.use_checkpoint = False  # gradient checkpointing: training only
    args.use_transformer_ckpt = False
    try:
        with _quiet(), _bert_from_folder_config():
            model = build_model(args)
    except (OSError, ValueError) as e:  # tokenizer/config files unreadable
        raise A2LCError(f"cannot build GroundingDINO from {config} with text encoder {text_encoder}: {_short(e)}") from None
    except (AttributeError, KeyError, AssertionError, TypeError) as e:
        raise A2LCError(f"{config}: incomplete or invalid GroundingDINO config ({type(e).__name__}: {_short(e)})") from None
    return model.eval()


def load_gdino(checkpoint: Path, config: str, text_encoder: Path) -> torch.nn.Module:
    """Build GroundingDINO from ``config`` and load ``checkpoint``, checking every key and shape."""
    cfg_path = resolve_gdino_config(config)
    text_encoder = check_text_encoder(text_encoder)
    sd = read_state_dict(checkpoint, what="GroundingDINO")
    if any(k.startswith("image_encoder.") for k in sd):
        raise A2LCError(f"{checkpoint}: this is a SAM checkpoint, not a GroundingDINO one (swap --sam-checkpoint and --gdino-checkpoint?)")
    model = build_gdino(cfg_path, text_encoder)
    key = "backbone.0.patch_embed.proj.weight"
    w, own = sd.get(key), model.state_dict().get(key)
    if w is not None and own is not None and w.shape != own.shape:
        guess = _SWIN_WIDTH.get(int(w.shape[0]))
        raise A2LCError(
            f"{checkpoint}: does not match GroundingDINO config {config}: the file's Swin backbone width is "
            f"{w.shape[0]}, the config's {own.shape[0]}" + (f" — try --gdino-config {guess}" if guess else "")
        )
    optional: tuple[str, ...] = ()
    folder_weights = [text_encoder / f for f in _WEIGHT_FILES if (text_encoder / f).is_file()]
    if folder_weights:
        optional = ("bert.",)  # missing text-encoder weights come from the folder
    missing = load_checked(model, sd, path=checkpoint, what=f"GroundingDINO config {config}", optional=optional)
    if any(k.startswith("bert.") for k in missing):
        from transformers import BertModel

        with _quiet():
            bert = BertModel.from_pretrained(str(text_encoder), local_files_only=True)
        load_checked(model.bert, bert.state_dict(), path=folder_weights[0], what="text encoder weights")
    return model


# --------------------------------------------------------------------------- checkpoint files
def read_state_dict(path: Path, *, what: str) -> dict[str, torch.Tensor]:
    """Read a torch checkpoint (a state dict, or a dict holding one under ``model``/``state_dict``).

    Loaded with ``weights_only=True`` (no arbitrary code from the file); a
    ``module.`` prefix (DataParallel) is stripped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise A2LCError(f"{what} checkpoint {path} does not exist")
    from ...store import load_torch

    obj = load_torch(path, what=f"{what} checkpoint", safe_globals=(argparse.Namespace,))
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise A2LCError(f"{path}: not a {what} checkpoint (expected a dict of tensors)")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_checked(
    model: torch.nn.Module,
    sd: dict[str, torch.Tensor],
    *,
    path: Path,
    what: str,
    optional: tuple[str, ...] = (),
) -> list[str]:
    """Load ``sd`` into ``model``; any shape mismatch or missing key (not under ``optional``) is an error.

    Keys the model does not have are ignored (e.g. buffers older library versions
    saved). Returns the missing optional keys.
    """
    own = model.state_dict()
    for k, v in own.items():
        if k in sd and tuple(sd[k].shape) != tuple(v.shape):
            raise A2LCError(
                f"{path}: does not match {what}: {k} has shape {tuple(sd[k].shape)} in the file "
                f"but {tuple(v.shape)} in the model"
            )
    missing = [k for k in own if k not in sd]
    required = [k for k in missing if not k.startswith(optional)] if optional else missing
    if required:
        raise A2LCError(
            f"{path}: does not match {what}: {len(required)} of {len(own)} weights are missing "
            f"(first: {required[0]})"
        )
    model.load_state_dict({k: sd[k] for k in own if k in sd}, strict=False)
    return missing


def fingerprint(path: Path) -> dict[str, Any]:
    """Identify a (possibly multi-GB) file cheaply: absolute path, size, SHA-256 of its first and last MiB."""
    path = Path(path).expanduser().resolve()
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
            h.update(f.read(1 << 20))
    return {"path": str(path), "size": size, "sha256_head_tail": h.hexdigest()[:16]}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the libraries' prints (they would corrupt ``--json`` stdout) and their deprecation chatter."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def quiet() -> contextlib.AbstractContextManager[None]:
    """Public handle of the stdout/warning silencer for inference calls."""
    return _quiet()


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


__all__ = [
    "GDINO_CONFIGS", "SAM_TYPES", "SamSpec", "build_gdino", "build_sam", "check_text_encoder", "find_cached_bert",
    "fingerprint", "load_checked", "load_gdino", "load_sam", "quiet", "read_state_dict", "resolve_gdino_config",
    "resolve_sam_spec",
]
