"""Cost of the acquisition pass against a plain inference pass, and its memory as the dataset grows.

    .venv/bin/python bench/acquire_speed.py                       # CPU, built-in `city` size; CUDA too when present
    .venv/bin/python bench/acquire_speed.py --device cuda --model deeplabv3plus_r101 --height 1024 --width 2048 --images 24
    .venv/bin/python bench/acquire_speed.py --memory-images 100 300 1000 3000

Two measurements (SPEC §5 "Speed" and "Scale"):

1. **Ratio.** Over the same workspace and model θ (random weights: the cost
   does not depend on them), the wall time of ``a2lc acquire`` (model forward,
   softmax, every per-mask reduction of ABC incl. the cosine to f(m′), the class
   weights, the scores, the LCM features, writing ``acquire.h5``) against a plain
   inference pass over the same image stream (forward, softmax, argmax copied to
   the host, as a prediction-writing pass would). Both read the images and the
   painted labels through the same streaming reader, so the ratio isolates what
   acquisition adds. Target ≤ 1.3. Passes alternate and the median of
   ``--repeats`` is reported.
2. **Memory.** Peak resident memory (CPU: max RSS of a fresh subprocess; CUDA:
   ``torch.cuda.max_memory_allocated``) of the acquire pass at growing numbers of
   train images. It must stay flat: only per-mask statistics (a few floats per
   mask) grow with the dataset, never per-pixel probabilities.

Prints tables and writes bench/results/acquire_speed-<device>-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from a2lc_cli import ui  # noqa: E402
from a2lc_cli.acquire import run_acquire  # noqa: E402
from a2lc_cli.config import Config  # noqa: E402
from a2lc_cli.data import open_source  # noqa: E402
from a2lc_cli.data.stream import iter_train_batches  # noqa: E402
from a2lc_cli.data.synthetic import SyntheticSource  # noqa: E402
from a2lc_cli.models import build_model, to_input  # noqa: E402
from a2lc_cli.pseudolabel import run_pseudolabel  # noqa: E402
from a2lc_cli.state import Dataset, mask_state  # noqa: E402
from a2lc_cli.training import load_model, save_model  # noqa: E402
from a2lc_cli.workspace import Workspace  # noqa: E402


def make_workspace(root: Path, *, images: int, height: int | None, width: int | None, model: str, seed: int = 0) -> tuple[Workspace, Config]:
    """A built-in `city` workspace of ``images`` train images with pseudo-labels and a random θ_0."""
    ws = Workspace(root)
    root.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.seed = seed
    cfg.source.n_train = images
    cfg.source.n_val = 1
    if height and width:
        cfg.source.height, cfg.source.width = height, width
    cfg.train.model = model
    ws.save_config(cfg)
    if not ws.dataset_path.exists():
        run_pseudolabel(ws.dataset_path, cfg)
    if not ws.artifact(0, "model.pt").exists():
        with Dataset(ws.dataset_path) as ds:
            names = list(ds.classes.names)
        torch.manual_seed(seed)
        net = build_model(model, len(names))
        ws.artifact(0, "model.pt").parent.mkdir(parents=True, exist_ok=True)
        save_model(ws.artifact(0, "model.pt"), net, model_name=model, class_names=names, round=0)
    return ws, cfg


def plain_inference(ws: Workspace, cfg: Config, device: torch.device, batch_size: int) -> float:
    """Seconds of a plain inference pass over the train images (same stream as acquire)."""
    model, _ = load_model(ws.artifact(0, "model.pt"), device)
    source = open_source(cfg)
    bf16 = device.type == "cuda"
    t0 = time.perf_counter()
    with Dataset(ws.dataset_path) as ds:
        state = mask_state(ws.root, ds, 0)
        for batch in iter_train_batches(ds.path, source, state, batch_size=batch_size):
            x = to_input(batch.images, device, channels_last=device.type == "cuda")
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            pred = torch.softmax(logits.float(), 1).argmax(1).to(torch.uint8).cpu()
            del pred
    _sync(device)
    return time.perf_counter() - t0


def acquire_pass(ws: Workspace, cfg: Config, device: torch.device, batch_size: int, fn: str = "abc") -> float:
    """Seconds of ``a2lc acquire --r 1`` (scores, features, acquire.h5 written)."""
    out = ws.artifact(1, "acquire.h5")
    if out.exists():
        out.unlink()
    t0 = time.perf_counter()
    run_acquire(ws, cfg, 1, fn=fn, device=str(device), batch_size=batch_size)
    _sync(device)
    return time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ratio(args: argparse.Namespace, device: torch.device, work: Path) -> dict:
    """Median acquire and plain-inference times over the same workspace; their ratio."""
    ws, cfg = make_workspace(work / f"ratio-{device.type}", images=args.images, height=args.height, width=args.width,
                             model=args.model)
    with Dataset(ws.dataset_path) as ds:
        n_images, n_masks, hw = ds.n_images, ds.n_masks, (int(ds.heights[0]), int(ds.widths[0]))
    plain_inference(ws, cfg, device, args.batch_size)  # warm-up: caches, kernels, allocator
    acquire_pass(ws, cfg, device, args.batch_size)
    plain, acq = [], []
    for _ in range(args.repeats):
        plain.append(plain_inference(ws, cfg, device, args.batch_size))
        acq.append(acquire_pass(ws, cfg, device, args.batch_size))
    p, a = statistics.median(plain), statistics.median(acq)
    return {"device": _device_name(device), "model": args.model, "images": n_images, "masks": n_masks,
            "size": f"{hw[0]}x{hw[1]}", "batch_size": args.batch_size, "plain_s": round(p, 3), "acquire_s": round(a, 3),
            "plain_ms_per_image": round(1000 * p / n_images, 2), "acquire_ms_per_image": round(1000 * a / n_images, 2),
            "ratio": round(a / p, 3), "runs_plain": [round(x, 3) for x in plain], "runs_acquire": [round(x, 3) for x in acq]}


def memory_child(args: argparse.Namespace) -> None:
    """(subprocess) Build a workspace of ``--images`` images, run one acquire pass, print its peak memory."""
    device = torch.device(args.device)
    work = Path(args.work)
    ws, cfg = make_workspace(work, images=args.images, height=args.height, width=args.width, model=args.model)
    if args.prepare_only:
        return
    # the built-in source keeps up to 1,024 rendered images in memory (≈150 MB), a property of the
    # generator, not of the pass: turn it off so that the numbers are the pass's own
    SyntheticSource.CACHE = 0
    with Dataset(ws.dataset_path) as ds:
        n_masks = ds.n_masks
    base_rss = _reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = acquire_pass(ws, cfg, device, args.batch_size)
    out = {"images": args.images, "masks": n_masks, "seconds": round(seconds, 2),
           "peak_rss_mb": round(_peak_rss_kb() / 1024, 1), "rss_before_acquire_mb": round(base_rss / 1024, 1)}
    if device.type == "cuda":
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print("RESULT " + json.dumps(out))


def _peak_rss_kb() -> int:
    """Peak resident memory of this process in kB: VmHWM (Linux), else ru_maxrss.

    (ru_maxrss survives fork+exec, so a child would report its parent's peak.)
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak_rss() -> int:
    """Reset the peak to the current RSS where Linux allows (/proc/self/clear_refs); return it in kB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _peak_rss_kb()


def memory(args: argparse.Namespace, device: torch.device, work: Path) -> list[dict]:
    """Peak memory of the acquire pass for each size in ``--memory-images`` (fresh process each).

    The workspace is built by one subprocess and measured by another, so the
    peak is the pass's own (plus the imports and the opened workspace, shown as
    "RSS before pass").
    """
    rows = []
    for n in args.memory_images:
        cmd = [sys.executable, __file__, "--memory-child", "--images", str(n), "--device", str(device),
               "--model", args.model, "--batch-size", str(args.batch_size), "--work", str(work / f"mem-{device.type}-{n}")]
        if args.height and args.width:
            cmd += ["--height", str(args.height), "--width", str(args.width)]
        prep = subprocess.run(cmd + ["--prepare-only"], capture_output=True, text=True, check=False)
        if prep.returncode:
            raise SystemExit(f"building the {n}-image workspace failed:\n{prep.stderr[-2000:]}")
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"memory run for {n} images failed:\n{res.stderr[-2000:]}")
        rows.append(json.loads(line[len("RESULT "):]))
    return rows


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cpu, then cuda when available)")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--images", type=int, default=300, help="train images of the ratio workspace")
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-images", type=int, nargs="*", default=[100, 300, 1000, 3000])
    ap.add_argument("--work", default=None, help="folder for the benchmark workspaces (default: a temp folder)")
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    ui.set_quiet(True)
    if args.memory_child:
        memory_child(args)
        return 0
    devices = [torch.device(args.device)] if args.device else [torch.device("cpu")] + (
        [torch.device("cuda")] if torch.cuda.is_available() else [])
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="a2lc-bench-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        for device in devices:
            r = ratio(args, device, work)
            mem = memory(args, device, work) if args.memory_images else []
            ui.out.print(ui.table(
                f"acquire vs plain inference — {r['device']}, {r['model']}, {r['size']}, {r['images']} images",
                ["pass", "seconds (median)", "ms / image"],
                [["plain inference", r["plain_s"], r["plain_ms_per_image"]],
                 ["acquire (ABC)", r["acquire_s"], r["acquire_ms_per_image"]],
                 ["ratio (target ≤ 1.3)", r["ratio"], ""]]))
            if mem:
                cols = ["images", "masks", "seconds", "peak RSS (MB)", "RSS before pass (MB)"]
                cols += ["CUDA peak (MB)"] if device.type == "cuda" else []
                ui.out.print(ui.table("peak memory of the acquire pass vs dataset size", cols, [
                    [m["images"], m["masks"], m["seconds"], m["peak_rss_mb"], m["rss_before_acquire_mb"],
                     *([m["cuda_peak_mb"]] if device.type == "cuda" else [])] for m in mem]))
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            path = out_dir / f"acquire_speed-{device.type}-{stamp}.json"
            path.write_text(json.dumps({
                "date": dt.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
                "cpus": os.cpu_count(), "torch": torch.__version__, "command": " ".join(sys.argv),
                "ratio": r, "memory": mem}, indent=1) + "\n")
            print(f"saved {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
