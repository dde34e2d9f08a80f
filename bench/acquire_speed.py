"""Cost of the acquisition pass against a plain inference pass, and its memory as the dataset grows.

    .venv/bin/python bench/acquire_speed.py                       # CPU, built-in `city` size; CUDA too when present
    .venv/bin/python bench/acquire_speed.py --device cuda --model deeplabv3plus_r101 --height 1024 --width 2048 --images 24
    .venv/bin/python bench/acquire_speed.py --memory-images 100 300 1000 3000
    .venv/bin/python bench/acquire_speed.py --paper-size                 # 1024×2048, ≈250 masks, 19 classes (CPU)
    .venv/bin/python bench/acquire_speed.py --paper-size --device cuda --model deeplabv3plus_r101

Two measurements (SPEC §5 "Speed" and "Scale"):

1. **Ratio.** Over the same workspace and model θ (random weights: the cost
   does not depend on them), the wall time of ``a2lc acquire`` (model forward,
   softmax, every per-mask reduction of ABC incl. the cosine to f(m′), the class
   weights, the scores, the LCM features, writing ``acquire.h5``) against a plain
   inference pass over the same image stream (forward, softmax on the fast layout, argmax copied to
   the host, as a prediction-writing pass would). Both read the images and the
   painted labels through the same streaming reader, so the ratio isolates what
   acquisition adds. Target ≤ 1.3. Passes alternate and the median of
   ``--repeats`` is reported.
2. **Memory.** Peak resident memory (CPU: max RSS of a fresh subprocess; CUDA:
   ``torch.cuda.max_memory_allocated``) of the acquire pass at growing numbers of
   train images. It must stay flat: only per-mask statistics (a few floats per
   mask) grow with the dataset, never per-pixel probabilities.

3. **Paper size** (``--paper-size``). The script builds its own workspace of
   1024×2048 `city` images whose correction units are ≈250 masks per image (a
   Voronoi partition, 3% of the cells left uncovered; round-0 label = the mask's
   ground-truth majority), 19 classes. (a) *Scoring*: per image, the CPU seconds
   (``time.process_time``) of everything acquisition adds after the model's logits —
   softmax, every per-mask reduction incl. the LCM feature (Eq. 1), storing the
   statistics — with the default kernel (on the CPU the fused numba loops), the same
   passes as torch ops (``kernel="torch"``, what CUDA runs) and the former per-pixel ×
   class implementation (kept in tests/test_acquisition.py), alternating, min and
   median of ``--repeats``, paired ratios. (b)
   *Pass*: one ``a2lc acquire`` at its default batch in a fresh process: peak RSS,
   CPU seconds per image, and a plain inference pass's CPU seconds per image.
   Goals (issue 20): scoring ≤ 0.4 CPU-s per image, peak RSS ≤ 1.5 GB; on CUDA
   (deeplabv3plus_r101, bf16) the ratio acquire / plain inference ≤ 1.15.

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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from a2lc_cli import ui  # noqa: E402
from a2lc_cli.acquire import default_batch_size, run_acquire, softmax_classes  # noqa: E402
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
    _random_theta0(ws, model, seed)
    return ws, cfg


def _random_theta0(ws: Workspace, model: str, seed: int) -> None:
    """A randomly initialised θ_0 (speed does not depend on the weights), unless one exists."""
    if ws.artifact(0, "model.pt").exists():
        return
    with Dataset(ws.dataset_path) as ds:
        names = list(ds.classes.names)
    torch.manual_seed(seed)
    net = build_model(model, len(names))
    ws.artifact(0, "model.pt").parent.mkdir(parents=True, exist_ok=True)
    save_model(ws.artifact(0, "model.pt"), net, model_name=model, class_names=names, round=0)


AUTHORS_S_PER_IMAGE = 45.1  # the authors' released scoring code, per 1024×2048 image (SPEC §5)


def voronoi_segment(rng: np.random.Generator, h: int, w: int, k: int, uncovered: float = 0.03) -> np.ndarray:
    """(h,w) int32 mask ids 0..k-1: nearest of k random seeds on an 8×-coarser grid; some cells −1."""
    hs, ws_ = max(1, h // 8), max(1, w // 8)
    seeds = rng.random((k, 2)) * (hs, ws_)
    yy, xx = np.mgrid[0:hs, 0:ws_]
    d = (yy.reshape(-1, 1) - seeds[:, 0]) ** 2 + (xx.reshape(-1, 1) - seeds[:, 1]) ** 2
    coarse = d.argmin(1).reshape(hs, ws_).astype(np.int32)
    drop = rng.random(k) < uncovered
    coarse = np.where(drop[coarse], -1, coarse)
    seg = np.repeat(np.repeat(coarse, 8, 0), 8, 1)[:h, :w]
    return np.pad(seg, ((0, h - seg.shape[0]), (0, w - seg.shape[1])), mode="edge")


def make_paper_workspace(root: Path, *, images: int, model: str, masks: int = 250, seed: int = 0) -> tuple[Workspace, Config]:
    """A workspace of ``images`` 1024×2048 `city` images with ≈``masks`` masks each and a random θ_0."""
    from a2lc_cli.state import DatasetWriter, ImageProposal

    ws = Workspace(root)
    root.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.seed = seed
    cfg.source.n_train, cfg.source.n_val = images, 1
    cfg.source.height, cfg.source.width = 1024, 2048
    cfg.train.model = model
    ws.save_config(cfg)
    if not ws.dataset_path.exists():
        source = open_source(cfg)
        n = len(source.names("train"))
        writer = DatasetWriter(ws.dataset_path, classes=source.classes, names=source.names("train"),
                               paths=[source.image_path("train", i) for i in range(n)],
                               sizes=[source.size("train", i) for i in range(n)], has_gt=True,
                               meta={"bench": "paper-size", "masks_per_image": masks})
        rng = np.random.default_rng(seed)
        try:
            for i in range(n):
                gt = source.label("train", i)
                seg = voronoi_segment(rng, *gt.shape, masks)
                inside = seg >= 0
                hist = np.bincount(seg[inside].astype(np.int64) * 256 + gt[inside], minlength=masks * 256)
                major = hist.reshape(masks, 256)[:, :255].argmax(1).astype(np.uint8)
                label0 = np.where(inside, major[np.maximum(seg, 0)], source.classes.fill_label).astype(np.uint8)
                writer.add_image(i, ImageProposal(segment=seg, label0=label0), gt)
            writer.finish()
        finally:
            writer.close()
    _random_theta0(ws, model, seed)
    return ws, cfg


def paper_scoring(args: argparse.Namespace, device: torch.device, ws: Workspace, cfg: Config) -> dict:
    """CPU seconds per image of the scoring after the logits: current vs former implementation."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_acquisition import _reference_reduce_batch

    from a2lc_cli.acquisition import MaskStats, reduce_batch

    model, _ = load_model(ws.artifact(0, "model.pt"), device)
    source = open_source(cfg)
    bf16 = device.type == "cuda"
    rows = {"current": [], "current_softmax": [], "torch": [], "former": []}
    with Dataset(ws.dataset_path) as ds:
        state = mask_state(ws.root, ds, 0)
        counted = torch.as_tensor(~state.queried, device=device)
        k_per_image = ds.n_masks / ds.n_images
        for batch in iter_train_batches(ds.path, source, state, batch_size=1):
            i0 = batch.indices[0]
            m0, m1 = int(ds.mask_offset[i0]), int(ds.mask_offset[i0 + 1])
            x = to_input(batch.images, device, channels_last=device.type == "cuda")
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            seg = torch.as_tensor(batch.segment, device=device).long()
            seg = torch.where(seg >= 0, seg - m0, seg)
            labels = torch.as_tensor(batch.labels, device=device).long()
            stats = MaskStats(ds.n_masks, ds.num_classes)
            base = np.zeros(m1 - m0, np.int64)

            def current() -> None:
                work = logits.clone()  # overwritten in place by the softmax (as in acquire); not timed
                t0 = time.process_time()
                b = reduce_batch(work, seg, labels, m1 - m0, counted=counted[m0:m1], logits=True)
                stats.put(m0, b, base)
                _sync(device)
                rows["current"].append(time.process_time() - t0)
                t1 = time.process_time()
                softmax_classes(logits)
                _sync(device)
                rows["current_softmax"].append(time.process_time() - t1)

            def torch_ops() -> None:  # the same two passes as torch ops (what CUDA runs; the CPU default before numba)
                work = logits.clone()
                t0 = time.process_time()
                b = reduce_batch(work, seg, labels, m1 - m0, counted=counted[m0:m1], logits=True, kernel="torch")
                stats.put(m0, b, base)
                _sync(device)
                rows["torch"].append(time.process_time() - t0)

            def former() -> None:
                t0 = time.process_time()
                c = logits.shape[1]
                probs = torch.softmax(logits.float(), 1).permute(0, 2, 3, 1).reshape(-1, c)
                b = _reference_reduce_batch(probs, seg.reshape(-1), labels.reshape(-1), m1 - m0, counted=counted[m0:m1])
                for name in ("area", "dominant", "mean_prob", "sim_by_class", "cil", "rep_pixel", "counts"):
                    b[name].cpu()
                _sync(device)
                rows["former"].append(time.process_time() - t0)

            for _ in range(args.repeats):
                current()
                if device.type == "cpu":
                    torch_ops()
                if not args.skip_former:
                    former()
            del logits
    cur, old = rows["current"], rows["former"]
    out = {"images": len(cur) // args.repeats, "masks_per_image": round(k_per_image, 1), "size": "1024x2048",
           "current_cpu_s_min": round(min(cur), 3), "current_cpu_s_median": round(statistics.median(cur), 3),
           "softmax_cpu_s_median": round(statistics.median(rows["current_softmax"]), 3),
           "x_authors": round(AUTHORS_S_PER_IMAGE / statistics.median(cur), 1), "runs_current": [round(v, 3) for v in cur]}
    tor = rows["torch"]
    if tor:
        out.update({"torch_cpu_s_min": round(min(tor), 3), "torch_cpu_s_median": round(statistics.median(tor), 3),
                    "ratio_torch_over_current_median": round(statistics.median([o / c for o, c in zip(tor, cur)]), 2),
                    "ratio_torch_over_current_min": round(min(o / c for o, c in zip(tor, cur)), 2),
                    "runs_torch": [round(v, 3) for v in tor]})
    if old:
        out.update({"former_cpu_s_min": round(min(old), 3), "former_cpu_s_median": round(statistics.median(old), 3),
                    "ratio_former_over_current_median": round(statistics.median([o / c for o, c in zip(old, cur)]), 2),
                    "runs_former": [round(v, 3) for v in old]})
    return out


def plain_inference(ws: Workspace, cfg: Config, device: torch.device, batch_size: int | None) -> float:
    """Seconds of a plain inference pass over the train images (same stream as acquire and its default batch)."""
    if batch_size is None:
        with Dataset(ws.dataset_path) as ds:
            batch_size = default_batch_size(device, int((ds.heights * ds.widths).max()))
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
            pred = softmax_classes(logits).argmax(1).to(torch.uint8).cpu()  # the fast layout, as acquire
            del pred
    _sync(device)
    return time.perf_counter() - t0


def acquire_pass(ws: Workspace, cfg: Config, device: torch.device, batch_size: int | None, fn: str = "abc") -> float:
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
    if args.paper_size:
        ws, cfg = make_paper_workspace(work, images=args.images, model=args.model)
    else:
        ws, cfg = make_workspace(work, images=args.images, height=args.height, width=args.width, model=args.model)
    if args.prepare_only:
        return
    # the built-in source keeps up to 1,024 rendered images in memory (≈150 MB), a property of the
    # generator, not of the pass: turn it off so that the numbers are the pass's own
    SyntheticSource.CACHE = 0
    if args.kernel == "torch":  # acquisition.reduce_batch then takes the torch ops on the CPU too
        import a2lc_cli.acquisition as acquisition

        acquisition._fused_kernels = lambda: None
    with Dataset(ws.dataset_path) as ds:
        n_masks = ds.n_masks
    base_rss = _reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    cpu0 = time.process_time()
    seconds = acquire_pass(ws, cfg, device, args.batch_size)
    cpu_acquire = time.process_time() - cpu0
    out = {"images": args.images, "masks": n_masks, "seconds": round(seconds, 2),
           "batch_size": args.batch_size or "default",
           "peak_rss_mb": round(_peak_rss_kb() / 1024, 1), "rss_before_acquire_mb": round(base_rss / 1024, 1),
           "acquire_cpu_s_per_image": round(cpu_acquire / args.images, 3)}
    if args.paper_size:  # after the peak was read: a plain inference pass over the same stream
        cpu0 = time.process_time()
        plain_s = plain_inference(ws, cfg, device, args.batch_size)
        out["plain_cpu_s_per_image"] = round((time.process_time() - cpu0) / args.images, 3)
        # wall time (synchronised on CUDA): the ratio that matters on a GPU (goal ≤ 1.15)
        out["acquire_ms_per_image"] = round(1000 * seconds / args.images, 2)
        out["plain_ms_per_image"] = round(1000 * plain_s / args.images, 2)
        out["ratio_wall"] = round(seconds / plain_s, 3)
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
               "--model", args.model, "--work", str(work / f"mem-{device.type}-{n}{'-paper' if args.paper_size else ''}")]
        cmd += ["--batch-size", str(args.batch_size)] if args.batch_size else []
        cmd += ["--paper-size"] if args.paper_size else []
        cmd += ["--kernel", args.kernel]
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
    ap.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default: acquire's default)")
    ap.add_argument("--paper-size", action="store_true", help="1024×2048 images with ≈250 masks each (builds its own workspace)")
    ap.add_argument("--skip-former", action="store_true", help="--paper-size: do not time the former implementation")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-images", type=int, nargs="*", default=[100, 300, 1000, 3000])
    ap.add_argument("--work", default=None, help="folder for the benchmark workspaces (default: a temp folder)")
    ap.add_argument("--kernel", choices=("default", "torch"), default="default",
                    help="reduction kernel of the acquire passes (torch: the torch ops even where the fused CPU kernel exists)")
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
    if args.paper_size:
        return paper_main(args, devices, out_dir)
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


def paper_main(args: argparse.Namespace, devices: list[torch.device], out_dir: Path) -> int:
    """``--paper-size``: scoring CPU seconds (current vs former) and one acquire pass in a fresh process."""
    if "--images" not in sys.argv:
        args.images = 4
    if "--memory-images" not in sys.argv:
        args.memory_images = [args.images]
    with tempfile.TemporaryDirectory(prefix="a2lc-bench-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        for device in devices:
            ws, cfg = make_paper_workspace(work / f"mem-{device.type}-{args.images}-paper", images=args.images, model=args.model)
            score = paper_scoring(args, device, ws, cfg)
            mem = memory(args, device, work)
            rows = [["current: softmax + per-mask scoring + LCM feature (fused CPU kernel)", score["current_cpu_s_min"], score["current_cpu_s_median"]],
                    ["  (a separate softmax over the same logits)", "", score["softmax_cpu_s_median"]]]
            if "torch_cpu_s_median" in score:
                rows += [["the same passes as torch ops (kernel='torch', what CUDA runs)", score["torch_cpu_s_min"],
                          score["torch_cpu_s_median"]],
                         ["torch ops / current (paired: min, median)", score["ratio_torch_over_current_min"],
                          score["ratio_torch_over_current_median"]]]
            if "former_cpu_s_median" in score:
                rows += [["former per-pixel × class implementation", score["former_cpu_s_min"], score["former_cpu_s_median"]],
                         ["former / current (paired, median)", "", score["ratio_former_over_current_median"]]]
            rows += [[f"authors' code ({AUTHORS_S_PER_IMAGE} s) / current", "", score["x_authors"]]]
            ui.out.print(ui.table(
                f"scoring after the logits, CPU s per 1024×2048 image ({score['masks_per_image']} masks, "
                f"{_device_name(device)}, goal ≤ 0.4)", ["implementation", "min", "median"], rows))
            ui.out.print(ui.table("a2lc acquire at paper size, fresh process (goal: peak RSS ≤ 1500 MB)",
                                  ["images", "masks", "batch", "peak RSS (MB)", "RSS before (MB)", "acquire CPU s / image",
                                   "plain inference CPU s / image", "acquire ms / image", "plain ms / image",
                                   "ratio (wall)"],
                                  [[m["images"], m["masks"], m["batch_size"], m["peak_rss_mb"], m["rss_before_acquire_mb"],
                                    m["acquire_cpu_s_per_image"], m.get("plain_cpu_s_per_image", ""),
                                    m.get("acquire_ms_per_image", ""), m.get("plain_ms_per_image", ""),
                                    m.get("ratio_wall", "")] for m in mem]))
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            path = out_dir / f"acquire_speed-paper-{device.type}-{stamp}.json"
            path.write_text(json.dumps({
                "date": dt.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
                "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                "device": _device_name(device), "model": args.model, "kernel": args.kernel, "command": " ".join(sys.argv),
                "scoring": score, "pass": mem}, indent=1) + "\n")
            print(f"saved {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
