"""Seconds per image of Grounded SAM pseudo-labelling at Cityscapes size (GroundingDINO SwinT + SAM ViT-H).

    .venv/bin/python bench/pseudolabel_speed.py                       # CUDA when available, else one CPU image
    .venv/bin/python bench/pseudolabel_speed.py --device cuda --batch 1 2 4 --boxes 50 --repeats 10
    .venv/bin/python bench/pseudolabel_speed.py --device cpu --sam-type vit_b

Random weights (the cost of a forward pass does not depend on them) in the
official architectures: GroundingDINO from groundingdino-py's bundled SwinT
config with a bert-base-uncased-sized text encoder (config and a placeholder
vocabulary written to a temporary folder; nothing downloaded), SAM ViT-H from
``segment_anything.modeling``. The images are random 1024×2048 RGB, the prompt
the 19 Cityscapes class names, GroundingDINO's input 512×1024 (the authors'
Cityscapes setting). The box threshold is 0 and ``--boxes`` caps the boxes, so
every image gets exactly that many SAM masks (random weights would otherwise
give an arbitrary number).

Stages, per image: ``gdino`` (GroundingDINO forward + box selection, batched),
``sam_encoder`` (SAM image encoder at 1024², batched), ``sam_decoder`` (all boxes
of one image in one prompt-encoder/mask-decoder call, masks upsampled to full
resolution and thresholded), ``paint`` (overlap resolution on the device, as the
labeler does it; ``paint np`` is the same with NumPy on the CPU, for scale), and
``total`` = the labeler's whole ``propose_batch`` (the sum plus transfers; on the
CPU, where a pass takes minutes, the sum of the stages).
CUDA runs in bf16 autocast by default.

References (H100, bf16): SAM ViT-H image encoder 65 ms per 1024² image; the
box-prompted decoder 17 ms for 50 boxes.

Prints a table and writes bench/results/pseudolabel_speed-<device>-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from a2lc_cli.labelers.base import paint_masks  # noqa: E402
from a2lc_cli.labelers.grounded_sam.engine import GroundedSamEngine, paint_masks_device  # noqa: E402
from a2lc_cli.labelers.grounded_sam.models import SAM_TYPES, build_gdino, build_sam, resolve_gdino_config  # noqa: E402
from a2lc_cli.labelers.grounded_sam.prompts import build_prompts, token_classes  # noqa: E402

CITYSCAPES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
              "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
BERT_BASE = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
             "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
             "type_vocab_size": 2, "hidden_act": "gelu"}
REFERENCE_MS = {"sam_encoder": 65.0, "sam_decoder": 17.0}  # H100, bf16, ViT-H, 50 boxes


def write_bert_base(folder: Path) -> Path:
    """bert-base-uncased's config and a vocabulary of its size: the class words plus placeholders."""
    words = sorted({w for name in CITYSCAPES for w in name.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", *words]
    vocab += [f"[unused{i}]" for i in range(BERT_BASE["vocab_size"] - len(vocab))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "config.json").write_text(json.dumps(BERT_BASE))
    return folder


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--batch", type=int, nargs="+", default=None, help="images per batch (default: 1 2 4 on CUDA, 1 on CPU)")
    ap.add_argument("--boxes", type=int, default=50, help="boxes (= SAM masks) per image")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 10 CUDA, 1 CPU)")
    ap.add_argument("--sam-type", default="vit_h", choices=sorted(SAM_TYPES))
    ap.add_argument("--gdino-config", default="SwinT")
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    cuda = device.type == "cuda"
    batches = args.batch or ([1, 2, 4] if cuda else [1])
    repeats = args.repeats or (10 if cuda else 1)
    warmup = 2 if cuda else 0
    bf16 = args.precision == "bf16" or (args.precision == "auto" and cuda)
    torch.manual_seed(0)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        gdino = build_gdino(resolve_gdino_config(args.gdino_config), write_bert_base(Path(tmp)))
    sam = build_sam(SAM_TYPES[args.sam_type])
    build_s = time.perf_counter() - t0
    from a2lc_cli.data.base import ClassInfo, default_palette

    classes = ClassInfo(CITYSCAPES, default_palette(19), fill_label=255, convention="cityscapes")
    prompts = build_prompts(classes, prompts={}, thresholds={}, box_threshold=0.0)
    engine = GroundedSamEngine(
        gdino, sam, prompts=prompts, token_class=token_classes(prompts, gdino.tokenizer), fill_label=255,
        device=device, bf16=bf16, short_side=512, max_side=1024, max_boxes=args.boxes,
    )
    params = {"gdino": sum(p.numel() for p in gdino.parameters()), "sam": sum(p.numel() for p in sam.parameters())}
    rng = np.random.default_rng(0)
    h, w = args.height, args.width
    rows = []
    for b in batches:
        images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(b)]
        xs = [torch.from_numpy(im).to(device).permute(2, 0, 1).float() for im in images]
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        dets = engine.detect(xs)  # also the warm-up on the CPU
        assert all(len(d.score) == args.boxes for d in dets), [len(d.score) for d in dets]
        t_gdino = timed(lambda: engine.detect(xs), device, repeats, warmup) / b
        emb, input_sizes = engine.encode(xs)
        t_enc = timed(lambda: engine.encode(xs), device, repeats, warmup) / b
        t_dec = timed(lambda: engine.decode(emb[:1], dets[0].boxes, input_sizes[0], (h, w)), device, repeats, warmup)
        masks = engine.decode(emb[:1], dets[0].boxes, input_sizes[0], (h, w))
        labels = dets[0].label
        t_paint = timed(lambda: paint_masks_device(masks, labels, 255), device, repeats, warmup)
        masks_np, labels_np = masks.cpu().numpy(), labels.cpu().numpy()
        t_paint_np = timed(lambda: paint_masks(masks_np, labels_np, 255), torch.device("cpu"), 1, 0)
        if cuda:  # the labeler's whole call, transfers included
            t_total = timed(lambda: engine.propose(images), device, repeats, warmup) / b
        else:  # a CPU pass of everything again would double a run of minutes: report the sum
            t_total = t_gdino + t_enc + t_dec + t_paint
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
        rows.append({"batch": b, "gdino_s": t_gdino, "sam_encoder_s": t_enc, "sam_decoder_s": t_dec,
                     "paint_s": t_paint, "paint_numpy_s": t_paint_np, "total_s": t_total, "peak_gib": peak})

    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()
    print(f"Grounded SAM ({args.gdino_config} + SAM {args.sam_type}) on {name}, {'bf16' if bf16 else 'fp32'}, "
          f"{h}x{w} images, {args.boxes} boxes/image, median of {repeats}; build {build_s:.1f} s")
    header = ["batch", "gdino", "sam enc", "sam dec", "paint", "paint np", "total", "img/s", "peak GiB"]
    print(" | ".join(f"{c:>10}" for c in header))
    for r in rows:
        cells = [r["batch"], *(f"{r[k] * 1e3:.1f} ms" for k in ("gdino_s", "sam_encoder_s", "sam_decoder_s", "paint_s", "paint_numpy_s", "total_s")),
                 f"{1 / r['total_s']:.2f}", "—" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"]
        print(" | ".join(f"{c:>10}" for c in cells))
    print(f"reference (H100 bf16): SAM ViT-H encoder {REFERENCE_MS['sam_encoder']:.0f} ms/image, "
          f"decoder {REFERENCE_MS['sam_decoder']:.0f} ms for 50 boxes")
    n_city = 2975
    best = min(r["total_s"] for r in rows)
    print(f"Cityscapes train ({n_city} images) at the best batch: {best * n_city / 3600:.2f} h on one device")

    args.out.mkdir(parents=True, exist_ok=True)
    date = dt.datetime.now().strftime("%Y-%m-%d")
    out = args.out / f"pseudolabel_speed-{device.type}-{date}.json"
    out.write_text(json.dumps({
        "bench": "pseudolabel_speed", "date": dt.datetime.now().isoformat(timespec="seconds"), "device": name,
        "device_type": device.type, "torch": torch.__version__, "precision": "bf16" if bf16 else "fp32",
        "gdino_config": args.gdino_config, "sam_type": args.sam_type, "image": [h, w], "gdino_input": [512, 1024],
        "boxes_per_image": args.boxes, "repeats": repeats, "parameters": params, "build_s": build_s,
        "threads": torch.get_num_threads(), "rows": rows, "reference_ms_h100_bf16": REFERENCE_MS,
        "cityscapes_train_hours_best_batch": best * n_city / 3600,
    }, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
