"""Cost of the acquisition pass against a plain inference pass, and its memory as the dataset grows.

    .venv/bin/python bench/acquire_speed.py                       # CPU, built-in `city` size; CUDA too when present
    .venv/bin/python bench/acquire_speed.py --device cuda --model deeplabv3plus_r101 --height 1024 --width 2048 --images 24
    .venv/bin/python bench/acquire_speed.py --memory-images 100 300 1000 3000
    .venv/bin/python bench/acquire_speed.py --paper-size                 # 1024×2048, ≈250 masks, 19 classes (CPU)
    .venv/bin/python bench/acquire_speed.py --paper-size --device cuda --model deeplabv3plus_r101
    .venv/bin/python bench/acquire_speed.py --kernel-memory --against /tmp/old_acquisition.py   # A/B, CPU
    .venv/bin/python bench/acquire_speed.py --paper-size --kernel-memory --smoke                # end to end, tiny

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
   median of ``--repeats``, paired ratios (on CUDA also synchronised wall ms). (b)
   *Pass*: one ``a2lc acquire`` at its default batch in a fresh process: peak RSS,
   CPU seconds per image, and a plain inference pass's CPU seconds per image. On CUDA
   the images are rendered once first (an untimed plain pass: a built-in 1024×2048
   image takes ≈ 1 CPU-s to render, which would swamp the GPU's ≈ 20 ms), then acquire
   and plain inference alternate ``--repeats`` times: synchronised wall ms per image and
   their ratio (medians), and the CUDA peak memory of the first acquire pass.
   Goals (issue 20): scoring ≤ 0.4 CPU-s per image, peak RSS ≤ 1.5 GB; on CUDA
   (deeplabv3plus_r101, bf16) the ratio acquire / plain inference ≤ 1.15.
4. **Kernel memory** (``--kernel-memory``). ``acquisition.reduce_batch`` alone on one
   1024×2048 image (19 classes, ≈250 Voronoi masks, smooth random logits, channels-last as
   the models return them): the peak memory it adds above its inputs and its time, per
   kernel and block size — on the CPU the torch kernel with the CPU's block
   (float32 logits), with the CUDA block (float32 and bf16 logits, as an autocast forward
   returns them) and the fused kernel, each in a fresh process (peak RSS, ``VmHWM``); on
   CUDA the torch kernel at several block sizes in one process
   (``torch.cuda.max_memory_allocated``, synchronised wall time). ``--against FILE``
   measures another ``acquisition.py`` alternately with the current one (A/B, paired
   ratios), e.g. ``git show REV:a2lc_cli/acquisition.py > /tmp/old_acquisition.py``.

``--smoke`` runs every part at a tiny size (64×128 images, 12 masks, 2 images, one
repeat): a check that the script runs end to end, not a measurement.

Prints tables and writes bench/results/acquire_speed-<device>-<date>.json (``--results-dir`` elsewhere).
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


PAPER_SIZE = (1024, 2048)


def make_paper_workspace(root: Path, *, images: int, model: str, masks: int = 250, seed: int = 0,
                         size: tuple[int, int] = PAPER_SIZE) -> tuple[Workspace, Config]:
    """A workspace of ``images`` `city` images of ``size`` (default 1024×2048) with ≈``masks`` masks each, random θ_0."""
    from a2lc_cli.state import DatasetWriter, ImageProposal

    ws = Workspace(root)
    root.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.seed = seed
    cfg.source.n_train, cfg.source.n_val = images, 1
    cfg.source.height, cfg.source.width = size
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
    rows = {"current": [], "current_softmax": [], "torch": [], "former": [], "current_wall": []}
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
                _sync(device)
                t0, w0 = time.process_time(), time.perf_counter()
                b = reduce_batch(work, seg, labels, m1 - m0, counted=counted[m0:m1], logits=True)
                stats.put(m0, b, base)
                _sync(device)
                rows["current"].append(time.process_time() - t0)
                rows["current_wall"].append(time.perf_counter() - w0)
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
    out = {"images": len(cur) // args.repeats, "masks_per_image": round(k_per_image, 1), "size": _paper_size_label(args),
           "current_cpu_s_min": round(min(cur), 3), "current_cpu_s_median": round(statistics.median(cur), 3),
           "current_wall_ms_min": round(1000 * min(rows["current_wall"]), 2),
           "current_wall_ms_median": round(1000 * statistics.median(rows["current_wall"]), 2),
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
        ws, cfg = make_paper_workspace(work, images=args.images, model=args.model, masks=args.masks,
                                       size=_paper_size(args))
    else:
        ws, cfg = make_workspace(work, images=args.images, height=args.height, width=args.width, model=args.model)
    if args.prepare_only:
        return
    if args.kernel == "torch":  # acquisition.reduce_batch then takes the torch ops on the CPU too
        import a2lc_cli.acquisition as acquisition

        acquisition._fused_kernels = lambda: None
    if device.type == "cuda":
        # rendering a built-in 1024×2048 image takes ≈ 1 CPU-s, 50× the forward pass: with renders in the timed
        # passes the ratio would compare renders. One untimed plain pass fills the source's render cache (shared by
        # the passes of this process) and warms cuDNN; the timed passes then read the images from memory.
        plain_inference(ws, cfg, device, args.batch_size)
    else:
        # the built-in source keeps up to 1,024 rendered images in memory (≈150 MB), a property of the
        # generator, not of the pass: turn it off so that the peak RSS is the pass's own
        SyntheticSource.CACHE = 0
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
    if device.type == "cuda":
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if args.paper_size:  # after the peak was read: a plain inference pass over the same stream
        cpu0 = time.process_time()
        plain_s = plain_inference(ws, cfg, device, args.batch_size)
        out["plain_cpu_s_per_image"] = round((time.process_time() - cpu0) / args.images, 3)
        acq_runs, plain_runs = [seconds], [plain_s]
        if device.type == "cuda":  # seconds per pass: alternate, medians
            for _ in range(max(0, args.repeats - 1)):
                acq_runs.append(acquire_pass(ws, cfg, device, args.batch_size))
                plain_runs.append(plain_inference(ws, cfg, device, args.batch_size))
        a, p = statistics.median(acq_runs), statistics.median(plain_runs)
        # wall time (synchronised on CUDA): the ratio that matters on a GPU (goal ≤ 1.15)
        out["acquire_ms_per_image"] = round(1000 * a / args.images, 2)
        out["plain_ms_per_image"] = round(1000 * p / args.images, 2)
        out["ratio_wall"] = round(a / p, 3)
        out["ratio_wall_paired"] = [round(x / y, 3) for x, y in zip(acq_runs, plain_runs)]
        out["runs_acquire_s"] = [round(x, 3) for x in acq_runs]
        out["runs_plain_s"] = [round(x, 3) for x in plain_runs]
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
        cmd += ["--paper-size", "--masks", str(args.masks)] if args.paper_size else []
        cmd += ["--kernel", args.kernel, "--repeats", str(args.repeats)]
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

# --------------------------------------------------------------------------- --kernel-memory
def _paper_size(args: argparse.Namespace) -> tuple[int, int]:
    return (args.height, args.width) if args.height and args.width else PAPER_SIZE


def _paper_size_label(args: argparse.Namespace) -> str:
    h, w = _paper_size(args)
    return f"{h}x{w}"


def kernel_inputs(size: tuple[int, int], masks: int, device: torch.device, dtype: torch.dtype, c: int = 19,
                  seed: int = 0):
    """One image's reduce_batch inputs: (1,C,H,W) channels-last logits of ``dtype`` (smooth: bilinear from 1/16
    resolution), (1,H,W) Voronoi mask ids (3% of the cells uncovered), labels (20% void), counted (≈90%)."""
    h, w = size
    rng = np.random.default_rng(seed)
    seg = torch.from_numpy(voronoi_segment(rng, h, w, masks).astype(np.int64))[None].to(device)
    labels = torch.from_numpy(rng.integers(0, c, (1, h, w))).to(device)
    labels[torch.from_numpy(rng.random((1, h, w)) < 0.2).to(device)] = 255
    g = torch.Generator().manual_seed(seed)
    coarse = 4 * torch.randn(1, c, max(1, h // 16), max(1, w // 16), generator=g)
    logits = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    logits = logits.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    counted = torch.from_numpy(rng.random(masks) < 0.9).to(device)
    return logits, seg, labels, masks, counted


def load_acquisition(path: str | None):
    """``a2lc_cli.acquisition``, or another version of it from a file (resolved inside the a2lc_cli package)."""
    if not path:
        import a2lc_cli.acquisition as mod

        return mod
    import importlib.util

    name = "a2lc_cli._bench_other_acquisition"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _block_chunk(mod, block: str, n: int) -> int | None:
    """reduce_batch's ``chunk`` for a block name: "default" (what the device picks), "cuda" (the CUDA default,
    a whole image before CUDA_PIXEL_CHUNK existed), or a number of pixels."""
    if block == "default":
        return None
    if block == "cuda":
        return getattr(mod, "CUDA_PIXEL_CHUNK", None) or n
    return int(block)


def kernel_child(args: argparse.Namespace) -> None:
    """(subprocess, CPU) One reduce_batch call on one image: peak RSS above the inputs, CPU and wall seconds."""
    mod = load_acquisition(args.impl)
    device = torch.device("cpu")
    size = _paper_size(args)
    logits, seg, labels, k, counted = kernel_inputs(size, args.masks, device, getattr(torch, args.dtype))
    chunk = _block_chunk(mod, args.block, size[0] * size[1])
    h, w = min(64, size[0]), min(128, size[1])  # warm-up on a crop: numba's loops, torch's first calls
    mod.reduce_batch(logits[:, :, :h, :w].clone(), seg[:, :h, :w], labels[:, :h, :w], k, counted=counted, logits=True,
                     kernel=args.kernel, chunk=chunk)
    work = logits.clone(memory_format=torch.channels_last)
    base = _reset_peak_rss()
    t0, w0 = time.process_time(), time.perf_counter()
    b = mod.reduce_batch(work, seg, labels, k, counted=counted, logits=True, kernel=args.kernel, chunk=chunk)
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    peak = _peak_rss_kb()
    print("RESULT " + json.dumps({"extra_mb": round((peak - base) / 1024, 1), "cpu_s": round(cpu, 3),
                                  "wall_s": round(wall, 3), "chunk": chunk or getattr(mod, "PIXEL_CHUNK", None),
                                  "area": int(b.area.sum())}))


KERNEL_CASES_CPU = [  # (kernel, block, logits dtype)
    ("torch", "default", "float32"),   # the CPU without numba
    ("torch", "cuda", "float32"),      # CUDA's block, float32 logits
    ("torch", "cuda", "bfloat16"),     # CUDA's block, bf16 logits (autocast)
    ("fused", "default", "float32"),   # the CPU's default
]
CUDA_BLOCKS = ["default", str(1 << 18), str(1 << 19), str(1 << 20), str(1 << 21)]


def kernel_memory(args: argparse.Namespace, device: torch.device) -> dict:
    """Peak memory and time of reduce_batch on one image per kernel/block (current, and ``--against`` alternately)."""
    impls = {"current": None} | ({"against": args.against} if args.against else {})
    runs: dict[str, dict[str, list[dict]]] = {}
    if device.type == "cuda" or args.smoke:  # in one process, the torch kernel at CUDA's block sizes
        for name, path in impls.items():
            mod = load_acquisition(path)
            logits, seg, labels, k, counted = kernel_inputs(_paper_size(args), args.masks, device, torch.bfloat16)
            n = logits.shape[-2] * logits.shape[-1]
            for block in CUDA_BLOCKS:
                chunk = _block_chunk(mod, block, n)
                if chunk is None and device.type == "cuda":
                    label = getattr(mod, "CUDA_PIXEL_CHUNK", None) or f"{n} (whole image)"
                else:
                    label = chunk or getattr(mod, "PIXEL_CHUNK", "")
                key = f"torch/{block}/bfloat16" + ("" if device.type == "cuda" else " (in process)")
                for r in range(args.repeats + 1):  # the first call warms up (not kept)
                    work = logits.clone(memory_format=torch.channels_last)
                    base = _mem_reset(device)
                    w0 = time.perf_counter()
                    mod.reduce_batch(work, seg, labels, k, counted=counted, logits=True, kernel="torch", chunk=chunk)
                    _sync(device)
                    wall = time.perf_counter() - w0
                    if r:
                        runs.setdefault(key, {}).setdefault(name, []).append(
                            {"extra_mb": round((_mem_peak(device) - base) / 2**20, 1), "wall_s": round(wall, 5),
                             "chunk": label})
                    del work
    if device.type == "cpu":
        cases = [cs for cs in KERNEL_CASES_CPU if cs[0] != "fused" or _has_numba()]
        for r in range(args.repeats):
            for kern, block, dtype in cases:
                order = list(impls.items()) if r % 2 == 0 else list(impls.items())[::-1]
                for name, path in order:
                    cmd = [sys.executable, __file__, "--kernel-child", "--kernel-name", kern, "--block", block,
                           "--dtype", dtype, "--masks", str(args.masks)]
                    cmd += ["--impl", path] if path else []
                    if args.height and args.width:
                        cmd += ["--height", str(args.height), "--width", str(args.width)]
                    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
                    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
                    if line is None:
                        raise SystemExit(f"kernel run {kern}/{block}/{dtype} ({name}) failed:\n{res.stderr[-2000:]}")
                    runs.setdefault(f"{kern}/{block}/{dtype}", {}).setdefault(name, []).append(
                        json.loads(line[len("RESULT "):]))
    summary = {}
    for key, by in runs.items():
        row: dict[str, object] = {}
        t = "cpu_s" if "cpu_s" in next(iter(by.values()))[0] else "wall_s"  # CPU s in a fresh process, else wall
        row["time"] = t
        for name, rs in sorted(by.items()):
            row[f"{name}_extra_mb_median"] = round(statistics.median(x["extra_mb"] for x in rs), 1)
            row[f"{name}_{t}_median"] = round(statistics.median(x[t] for x in rs), 4)
            row["chunk_" + name] = rs[0]["chunk"]
        if "against" in by:
            cur, alt = by["current"], by["against"]
            mem = [a["extra_mb"] / max(c["extra_mb"], 0.1) for c, a in zip(cur, alt)]
            row["against_over_current_extra_mb_min"] = round(min(mem), 2)
            row["against_over_current_extra_mb_median"] = round(statistics.median(mem), 2)
            tt = [a[t] / max(c[t], 1e-6) for c, a in zip(cur, alt)]
            row[f"against_over_current_{t}_min"] = round(min(tt), 2)
            row[f"against_over_current_{t}_median"] = round(statistics.median(tt), 2)
        summary[key] = row
    return {"size": _paper_size_label(args), "masks": args.masks, "classes": 19, "against": args.against,
            "repeats": args.repeats, "summary": summary, "runs": runs}


def _mem_reset(device: torch.device) -> int:
    """Reset the peak memory counter; return the bytes in use (CUDA: allocated; CPU: RSS)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return 1024 * _reset_peak_rss()


def _mem_peak(device: torch.device) -> int:
    """Peak bytes since :func:`_mem_reset` (CUDA: allocated; CPU: RSS, VmHWM)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return 1024 * _peak_rss_kb()


def _has_numba() -> bool:
    from a2lc_cli.acquisition import _fused_kernels

    return _fused_kernels() is not None


def print_kernel_memory(km: dict, device: torch.device) -> None:
    cols = ["case", "block px", "MB", "ms"]
    if km["against"]:
        cols += ["MB (against)", "ms (against)", "MB against / current: min, median", "ms against / current: median"]
    rows = []

    def ms(v):
        return "" if v == "" else f"{1000 * v:.1f}"

    for key, r in km["summary"].items():
        t = r["time"]
        row = [key, str(r.get("chunk_current") or ""), r.get("current_extra_mb_median", ""),
               ms(r.get(f"current_{t}_median", ""))]
        if km["against"]:
            row += [r.get("against_extra_mb_median", ""), ms(r.get(f"against_{t}_median", "")),
                    f"{r.get('against_over_current_extra_mb_min', '')}, {r.get('against_over_current_extra_mb_median', '')}",
                    r.get(f"against_over_current_{t}_median", "")]
        rows.append(row)
    ui.out.print(ui.table(
        f"reduce_batch on one {km['size']} image, {km['masks']} masks, 19 classes, median of {km['repeats']} "
        f"({_device_name(device)}). case = kernel/block/logits dtype; MB = peak above the inputs (CPU: RSS of a "
        "fresh process; CUDA and 'in process': allocated / RSS in one process); ms = CPU ms (fresh process) or "
        "wall ms (synchronised)", cols, rows))


def _save(out_dir: Path, name: str, payload: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(json.dumps(payload, indent=1) + "\n")
    try:
        shown = path.relative_to(ROOT)
    except ValueError:
        shown = path
    print(f"saved {shown}")
    return path


def _header(device: torch.device) -> dict:
    return {"date": dt.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": _device_name(device), "command": " ".join(sys.argv)}



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
    ap.add_argument("--masks", type=int, default=250, help="--paper-size / --kernel-memory: masks per image")
    ap.add_argument("--kernel-memory", action="store_true",
                    help="reduce_batch alone on one image: peak memory and time per kernel and block size")
    ap.add_argument("--against", default=None, metavar="FILE",
                    help="--kernel-memory: another acquisition.py to measure alternately with the current one")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes (64×128, 12 masks, 2 images, 1 repeat): checks that the script runs end to end")
    ap.add_argument("--results-dir", default=str(ROOT / "bench" / "results"), help="where the JSON files go")
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--kernel-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--kernel-name", default="torch", help=argparse.SUPPRESS)
    ap.add_argument("--block", default="default", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--impl", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    given = set(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        args.height, args.width = args.height or 64, args.width or 128
        if "--masks" not in given:
            args.masks = 12
        if "--images" not in given:
            args.images = 2
        if "--repeats" not in given:
            args.repeats = 1
        if "--memory-images" not in given:
            args.memory_images = [args.images]
    ui.set_quiet(True)
    ui.out.width = max(ui.out.width, 150)  # the tables are wide; they go to logs
    if args.memory_child:
        memory_child(args)
        return 0
    if args.kernel_child:
        args.kernel = args.kernel_name
        kernel_child(args)
        return 0
    devices = [torch.device(args.device)] if args.device else [torch.device("cpu")] + (
        [torch.device("cuda")] if torch.cuda.is_available() else [])
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.paper_size:
        return paper_main(args, devices, out_dir, given)
    if args.kernel_memory:
        for device in devices:
            km = kernel_memory(args, device)
            print_kernel_memory(km, device)
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            _save(out_dir, f"acquire_speed-kernel-{device.type}-{stamp}.json", _header(device) | {"kernel_memory": km})
        return 0
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
            _save(out_dir, f"acquire_speed-{device.type}-{stamp}.json", {
                "date": dt.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
                "cpus": os.cpu_count(), "torch": torch.__version__, "command": " ".join(sys.argv),
                "ratio": r, "memory": mem})
    return 0


def paper_main(args: argparse.Namespace, devices: list[torch.device], out_dir: Path, given: set[str]) -> int:
    """``--paper-size``: scoring CPU seconds (current vs former), one acquire pass in a fresh process, and with
    ``--kernel-memory`` reduce_batch's memory per kernel and block."""
    if "--images" not in given and not args.smoke:
        args.images = 4
    if "--memory-images" not in given:
        args.memory_images = [args.images]
    with tempfile.TemporaryDirectory(prefix="a2lc-bench-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        for device in devices:
            ws, cfg = make_paper_workspace(work / f"mem-{device.type}-{args.images}-paper", images=args.images,
                                           model=args.model, masks=args.masks, size=_paper_size(args))
            score = paper_scoring(args, device, ws, cfg)
            mem = memory(args, device, work)
            kern = "fused CPU kernel" if device.type == "cpu" else "torch kernel"
            rows = [[f"current: softmax + per-mask scoring + LCM feature ({kern})", score["current_cpu_s_min"],
                     score["current_cpu_s_median"]],
                    ["  the same, wall ms (synchronised)", score["current_wall_ms_min"], score["current_wall_ms_median"]],
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
                f"scoring after the logits, CPU s per {score['size']} image ({score['masks_per_image']} masks, "
                f"{_device_name(device)}, goal ≤ 0.4)", ["implementation", "min", "median"], rows))
            ui.out.print(ui.table("a2lc acquire at paper size, fresh process (goal: peak RSS ≤ 1500 MB)",
                                  ["images", "masks", "batch", "peak RSS (MB)", "RSS before (MB)", "acquire CPU s / image",
                                   "plain inference CPU s / image", "acquire ms / image", "plain ms / image",
                                   "ratio (wall)"],
                                  [[m["images"], m["masks"], m["batch_size"], m["peak_rss_mb"], m["rss_before_acquire_mb"],
                                    m["acquire_cpu_s_per_image"], m.get("plain_cpu_s_per_image", ""),
                                    m.get("acquire_ms_per_image", ""), m.get("plain_ms_per_image", ""),
                                    m.get("ratio_wall", "")] for m in mem]))
            km = None
            if args.kernel_memory:
                km = kernel_memory(args, device)
                print_kernel_memory(km, device)
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            _save(out_dir, f"acquire_speed-paper-{device.type}-{stamp}.json", _header(device) | {
                "model": args.model, "kernel": args.kernel, "scoring": score, "pass": mem, "kernel_memory": km})
    return 0


if __name__ == "__main__":
    sys.exit(main())
