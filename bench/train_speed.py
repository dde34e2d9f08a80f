"""Training-step and inference speed and peak memory of every segmentation model.

    .venv/bin/python bench/train_speed.py                      # CPU, then CUDA when available
    .venv/bin/python bench/train_speed.py --device cuda --steps 20
    .venv/bin/python bench/train_speed.py --models deeplabv3plus_r101 --device cpu --cpu-batch 2

Sizes are the paper's: a training step at batch 8 with 768×768 crops (SGD,
cross-entropy, backward, optimizer step) and inference on 1024×2048 images
(batch 1, no grad). On CUDA both run in bf16 autocast with channels-last; on the
CPU in float32 with channels-last, and the training batch defaults to 2 (batch 8
of the large models does not fit a small machine's memory; images/s is what to
compare). Each (model, mode) runs in a fresh subprocess so that the CPU peak
memory (max RSS) is its own. Random weights and inputs: speed does not depend
on them. ``tv_deeplabv3_r101`` is torchvision's DeepLabV3 (output stride 8),
the model of the reference numbers (H100, bf16: training step 225 ms, inference
19–22 ms per image); our DeepLabV3+ models use output stride 16.

Prints a table and writes bench/results/train_speed-<device>-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from a2lc_cli.models import MODELS, build_model, count_parameters, to_input  # noqa: E402
from a2lc_cli.training import segmentation_loss  # noqa: E402

EXTRA = ("tv_deeplabv3_r101",)
NUM_CLASSES = 19


def _model(name: str) -> torch.nn.Module:
    if name == "tv_deeplabv3_r101":
        from torchvision.models.segmentation import deeplabv3_resnet101

        net = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False)

        class Wrap(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, x):
                return self.net(x)["out"]

        return Wrap()
    return build_model(name, NUM_CLASSES)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure(name: str, mode: str, device: str, batch: int, h: int, w: int, steps: int, warmup: int,
            threads: int | None = None) -> dict:
    """One (model, mode) measurement in this process. Returns ms per step, images/s, peak memory."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    torch.manual_seed(0)
    model = _model(name).to(dev).to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8)
    target = torch.randint(0, NUM_CLASSES, (batch, h, w), device=dev)
    if cuda:
        torch.backends.cudnn.benchmark = True
        images = images.to(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    if mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        for i in range(warmup + steps):
            _sync(dev)
            t = time.perf_counter()
            x = to_input(images, dev, channels_last=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                logits = model(x)
            loss = segmentation_loss(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _sync(dev)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    else:
        model.eval()
        with torch.inference_mode():
            for i in range(warmup + steps):
                _sync(dev)
                t = time.perf_counter()
                x = to_input(images, dev, channels_last=True)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                    model(x).float()
                _sync(dev)
                if i >= warmup:
                    times.append(time.perf_counter() - t)
    times.sort()
    ms = 1000 * times[len(times) // 2]
    if cuda:
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB (Linux)
    return {
        "model": name, "mode": mode, "device": device, "batch": batch, "height": h, "width": w,
        "steps": steps, "warmup": warmup, "ms_per_step": round(ms, 2), "ms_per_image": round(ms / batch, 2),
        "images_per_s": round(1000 * batch / ms, 3), "peak_mib": round(peak, 1),
        "peak_kind": "cuda max_memory_allocated" if cuda else "process max RSS",
        "params": count_parameters(model), "precision": "bf16 autocast" if cuda else "float32",
        "threads": torch.get_num_threads(),
    }


def _run_child(args: argparse.Namespace, name: str, mode: str, device: str, batch: int, h: int, w: int,
               steps: int, warmup: int, threads: int | None = None) -> dict:
    threads = threads or args.threads
    cmd = [sys.executable, __file__, "--child", json.dumps([name, mode, device, batch, h, w, steps, warmup, threads])]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "mode": mode, "device": device, "error": f"timeout after {args.timeout}s"}
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        return {"model": name, "mode": mode, "device": device, "error": tail[:200]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _device_info(device: str) -> dict:
    info = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--models", nargs="*", default=[*MODELS, *EXTRA])
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    ap.add_argument("--batch", type=int, default=8, help="training batch on CUDA (the paper's 8)")
    ap.add_argument("--cpu-batch", type=int, default=2, help="training batch on the CPU")
    ap.add_argument("--crop", type=int, default=768)
    ap.add_argument("--infer-size", type=int, nargs=2, default=[1024, 2048])
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 2 on CPU, 20 on CUDA)")
    ap.add_argument("--modes", nargs="*", default=["train", "infer"])
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    if not devices:
        sys.exit("no CUDA device here")
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    for device in devices:
        cuda = device == "cuda"
        steps = args.steps or (20 if cuda else 2)
        warmup = 5 if cuda else 1
        rows = []
        for name in args.models:
            for mode in args.modes:
                if mode == "train":
                    batch, h, w = (args.batch if cuda else args.cpu_batch), args.crop, args.crop
                else:
                    batch, (h, w) = 1, args.infer_size
                console.print(f"{device} {name} {mode} batch {batch} {h}×{w} …", style="dim")
                rows.append(_run_child(args, name, mode, device, batch, h, w, steps, warmup))
            if name == "tiny" and "train" in args.modes:  # also at its own recipe (batch 16, crop 48, 1 thread)
                rows.append(_run_child(args, name, "train", device, 16, 48, 48, steps * 10, warmup,
                                       None if cuda else 1))
                rows.append(_run_child(args, name, "infer", device, 16, 96, 192, steps * 5, warmup,
                                       None if cuda else 1))
        t = Table(title=f"segmentation models on {device}")
        for c in ("model", "mode", "batch", "size", "ms/step", "ms/image", "images/s", "peak MiB", "precision",
                  "threads"):
            t.add_column(c, justify="left" if c in ("model", "mode", "precision") else "right")
        for r in rows:
            if "error" in r:
                t.add_row(r["model"], r["mode"], "", "", "error: " + r["error"], "", "", "", "", "")
                continue
            t.add_row(r["model"], r["mode"], str(r["batch"]), f"{r['height']}×{r['width']}", f"{r['ms_per_step']:.1f}",
                      f"{r['ms_per_image']:.1f}", f"{r['images_per_s']:.2f}", f"{r['peak_mib']:.0f}", r["precision"],
                      "" if cuda else str(r["threads"]))
        console.print(t)
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = args.out / f"train_speed-{device}-{stamp}.json"
        path.write_text(json.dumps({"date": dt.datetime.now().isoformat(timespec="seconds"),
                                    "machine": _device_info(device), "results": rows}, indent=2) + "\n")
        console.print(f"saved {path}")


if __name__ == "__main__":
    main()
