"""What verifying source images against dataset.h5 costs (issue 17 item 4).

    .venv/bin/python bench/fingerprint_cost.py                     # 48 JPEGs of 512×1024, 5 pairs
    .venv/bin/python bench/fingerprint_cost.py --images 24 --height 256 --width 512 --pairs 3

Builds a folder dataset (JPEG images, PNG labels) in a temporary directory, runs
``init``, ``pseudolabel --labeler import`` and ``train --r 0`` (tiny model, one
iteration), then measures in one process, A and B alternating (A first in odd
pairs, B first in even ones):

- *read*: reading every train image the way the stages do — A through
  ``fingerprint.TrainImages`` (names checked once, size and signature per image),
  B straight from the source. The worst case: a stage that does nothing but read.
- *acquire*: the whole ``acquire --r 1`` stage (tiny model, CPU), A as shipped, B
  with the check switched off (``TrainImages.verify`` and ``check_names`` replaced
  by no-ops).
- *pseudolabel*: the whole ``pseudolabel --labeler import`` stage (the cheapest
  labeler, so the worst case for a relative cost), A as shipped, B without what it
  now does in addition per image (the signature, and the two 256-bin value
  histograms behind the warnings: ``image_signature`` and ``value_counts``
  replaced by no-ops).
- *per image*: the check of one image (``TrainImages.verify``) and the pseudolabel
  extras, timed alone over the decoded images, against decoding the image.

Prints a table and writes bench/results/fingerprint_cost-<date>.json (ratios
are B→A: min and median over the pairs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def build(tmp: Path, n: int, h: int, w: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    root, imp = tmp / "data", tmp / "pseudo"
    for d in (root / "images", root / "labels", imp):
        d.mkdir(parents=True)
    (root / "classes.txt").write_text("".join(f"c{k}\n" for k in range(5)))
    for i in range(n):
        lab = np.kron(rng.integers(0, 5, size=(h // 32, w // 32)), np.ones((32, 32), np.int64)).astype(np.uint8)
        img = (lab[:, :, None] * 40 + rng.integers(0, 30, size=(h, w, 3))).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"frame_{i:04d}.jpg", quality=90)
        Image.fromarray(lab).save(root / "labels" / f"frame_{i:04d}.png")
        Image.fromarray(lab).save(imp / f"frame_{i:04d}.png")
    return root, imp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--pairs", type=int, default=5)
    args = ap.parse_args()

    from a2lc_cli import fingerprint
    from a2lc_cli import pseudolabel as pl_mod
    from a2lc_cli import state as state_mod
    from a2lc_cli.acquire import run_acquire
    from a2lc_cli.cli import invoke
    from a2lc_cli.data import open_source
    from a2lc_cli.state import Dataset
    from a2lc_cli.workspace import Workspace

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        root, imp = build(tmp, args.images, args.height, args.width)
        ws_root = tmp / "ws"
        for cmd in (["init", "--source", "folder", "--root", str(root), "--set", "train.iterations=1"],
                    ["pseudolabel", "--labeler", "import", "--import-dir", str(imp)],
                    ["train", "--r", "0", "--device", "cpu"]):
            assert invoke(["-q", "-w", str(ws_root), *cmd]) == 0, cmd
        ws = Workspace(ws_root)
        cfg = ws.config()
        source = open_source(cfg)
        n = len(source.names("train"))

        real_verify, real_names = fingerprint.TrainImages.verify, fingerprint.check_names

        def set_check(on: bool) -> None:
            fingerprint.TrainImages.verify = real_verify if on else (lambda self, i, image: None)
            fingerprint.check_names = real_names if on else (lambda *a, **k: None)

        def read_checked() -> float:
            t0 = time.perf_counter()
            with Dataset(ws.dataset_path) as ds:
                read = fingerprint.TrainImages.of(source, ds)
            for i in range(n):
                read(i)
            return time.perf_counter() - t0

        def read_plain() -> float:
            t0 = time.perf_counter()
            for i in range(n):
                source.image("train", i)
            return time.perf_counter() - t0

        real_sig, real_counts = pl_mod.image_signature, state_mod.value_counts

        def pseudolabel(on: bool) -> float:
            pl_mod.image_signature = real_sig if on else (lambda image: None)
            state_mod.value_counts = real_counts if on else (lambda values: np.zeros(256, np.int64))
            try:
                t0 = time.perf_counter()
                pl_mod.run_pseudolabel(tmp / "bench-dataset.h5", cfg, labeler="import", resume=False)
                return time.perf_counter() - t0
            finally:
                pl_mod.image_signature, state_mod.value_counts = real_sig, real_counts

        def acquire(on: bool) -> float:
            set_check(on)
            try:
                t0 = time.perf_counter()
                run_acquire(ws, cfg, 1, device="cpu", batch_size=4)
                return time.perf_counter() - t0
            finally:
                set_check(True)

        from a2lc_cli import ui

        ui.set_quiet(True)
        acquire(True)  # warm-up (imports, page cache)
        read_plain()
        pseudolabel(True)
        res = {"read": ([], []), "acquire": ([], []), "pseudolabel": ([], [])}  # (A as shipped, B without)
        for p in range(args.pairs):
            order = (True, False) if p % 2 == 0 else (False, True)
            for on in order:
                res["read"][0 if on else 1].append(read_checked() if on else read_plain())
                res["acquire"][0 if on else 1].append(acquire(on))
                res["pseudolabel"][0 if on else 1].append(pseudolabel(on))

        # pseudolabel extras per image vs decoding it
        decode, extras, verify = [], [], []
        with Dataset(ws.dataset_path) as ds:
            checker = fingerprint.TrainImages.of(source, ds)
            for i in range(n):
                t0 = time.perf_counter()
                img = source.image("train", i)
                t1 = time.perf_counter()
                lab = ds.label0(i).ravel()
                t2 = time.perf_counter()
                fingerprint.image_signature(img)
                state_mod.value_counts(lab)
                state_mod.value_counts(lab)
                t3 = time.perf_counter()
                checker.verify(i, img)
                t4 = time.perf_counter()
                decode.append(t1 - t0)
                extras.append(t3 - t2)
                verify.append(t4 - t3)

    rows = []
    out = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
           "cpus": os.cpu_count(), "command": " ".join(sys.argv), "images": n,
           "size": [args.height, args.width], "pairs": args.pairs}
    for name, (a, b) in res.items():
        ratios = [x / y for x, y in zip(a, b)]
        out[name] = {"with_check_s": a, "without_s": b, "ratio_min": min(ratios), "ratio_median": statistics.median(ratios)}
        rows.append((name, statistics.median(b), statistics.median(a), min(ratios), statistics.median(ratios)))
    share = sum(extras) / sum(decode)
    out["per_image"] = {"decode_ms": 1000 * statistics.median(decode), "verify_ms": 1000 * statistics.median(verify),
                        "pseudolabel_extras_ms": 1000 * statistics.median(extras),
                        "verify_share_of_decode": sum(verify) / sum(decode), "extras_share_of_decode": share}

    print(f"{n} images of {args.height}x{args.width} (JPEG), {args.pairs} alternating pairs")
    print(f"{'pass':<10}{'without (s)':>14}{'with (s)':>12}{'ratio min':>12}{'ratio median':>14}")
    for name, b, a, rmin, rmed in rows:
        print(f"{name:<10}{b:>14.3f}{a:>12.3f}{rmin:>12.4f}{rmed:>14.4f}")
    pe = out["per_image"]
    print(f"per image: decode {pe['decode_ms']:.2f} ms; check {pe['verify_ms']:.4f} ms "
          f"({100 * pe['verify_share_of_decode']:.2f}% of decoding); pseudolabel extras {pe['pseudolabel_extras_ms']:.3f} ms "
          f"({100 * share:.2f}% of decoding)")
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"fingerprint_cost-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
