"""Write docs/results.md and its plots from the quality study's saved runs (bench/results/quality/*.json).

    .venv/bin/python bench/quality_report.py            # same as bench/quality.py --report-only

Everything between the ``<!-- generated -->`` markers of docs/results.md is
rewritten from the files; the hand-written discussion outside them is kept.
Means ± sample standard deviations are over the seeds present for each
configuration (the count is shown where it is not 3).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from a2lc_cli.report import method_style, plot_queried_classes  # noqa: E402
from a2lc_cli.workspace import write_text_atomic  # noqa: E402

START, END = "<!-- generated: start (bench/quality_report.py) -->", "<!-- generated: end -->"
PRESETS = ("city", "voc")
TABLE5 = (("alc", "", "", ""), ("lcm", "✓", "", ""), ("abc", "", "✓", ""), ("lcm+abc", "✓", "✓", ""),
          ("a2lc", "✓", "✓", "✓"))
TABLE4 = (("acq-random", "Random"), ("acq-entropy", "Entropy"), ("acq-margin", "Margin"), ("acq-cil", "CIL"),
          ("acq-sim", "SIM"), ("a2lc", "ABC (ours)"))
LCM_CONFIGS = (("a2lc", "A²LC (authors' rules)"), ("a2lc-softmax-ce", "ψ's CE on softmax outputs (authors' code)"), ("a2lc-tail-dataset", "tail from dataset label counts"),
               ("a2lc-train-all", "ψ trained on all rounds' answers"), ("a2lc-lcm-steps", "ψ trained ≥ 20k steps"),
               ("a2lc-lcm-steps-tail-dataset", "ψ ≥ 20k steps + tail from dataset"), ("lcm", "LCM only (SIM, pixel)"),
               ("lcm+abc", "LCM + ABC (pixel)"))
PAPER_TABLE1 = {  # reference-code-notes.md, Data mIoU, mean of 3 seeds
    ("city", "alc"): [50.68, 62.28, 65.36, 66.19, 66.87, 67.01],
    ("city", "a2lc"): [50.68, 70.01, 75.60, 80.84, 82.69, 85.26],
    ("voc", "alc"): [58.63, 68.19, 72.72, 74.84, 76.41, 77.06],
    ("voc", "a2lc"): [58.63, 67.49, 74.88, 80.88, 84.81, 88.08],
}
# the paper's Table 4 (Data mIoU after 5 rounds, Cityscapes / PASCAL VOC), Table 5 (Cityscapes, Data 1R..5R,
# Model 5R) and Table 3 (masks corrected, accuracy before / after), from ../shared/reference/a2lc-paper.txt
PAPER_TABLE4 = {"init": (50.68, 58.63), "acq-random": (63.78, 68.84), "acq-entropy": (58.12, 59.95),
                "acq-margin": (62.68, 58.72), "acq-cil": (61.51, 59.29), "acq-sim": (78.98, 87.32),
                "a2lc": (84.92, 87.24)}
PAPER_TABLE5 = {"alc": (62.60, 65.20, 66.03, 66.85, 66.86, 58.59), "lcm": (65.66, 71.53, 76.00, 78.38, 80.59, 66.94),
                "abc": (67.31, 70.06, 74.49, 78.32, 81.58, 67.75), "lcm+abc": (70.62, 77.29, 80.39, 82.80, 84.15, 70.11),
                "a2lc": (71.04, 76.08, 81.13, 83.53, 85.57, 70.88)}
PAPER_TABLE3 = {"city": (22105, 19.13, 60.99), "voc": (1629, 4.85, 82.26)}


# --------------------------------------------------------------------------- loading and statistics
def load_runs(results: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(preset, config) -> finished runs, sorted by seed."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for f in sorted(Path(results).glob("*.json")):
        r = json.loads(f.read_text())
        runs.setdefault((r["preset"], r["config"]), []).append(r)
    for v in runs.values():
        v.sort(key=lambda r: r["seed"])
    return runs


def curve(run: dict[str, Any], key: str) -> list[float | None]:
    """Per-round values of one metric (index = round)."""
    return [r.get(key) for r in run["rounds"]]


def stats(values: list[float | None]) -> tuple[float, float, int] | None:
    """(mean, sample std, n) of the non-missing values, or None."""
    v = np.array([x for x in values if x is not None], float)
    if not len(v):
        return None
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def fmt(s: tuple[float, float, int] | None, *, n_expected: int = 3) -> str:
    if s is None:
        return "—"
    mean, std, n = s
    tail = "" if n == n_expected else f" (n={n})"
    return f"{mean:.2f} ± {std:.2f}{tail}" if n > 1 else f"{mean:.2f}{tail}"


def per_round(runs: list[dict[str, Any]], key: str, r: int) -> tuple[float, float, int] | None:
    return stats([curve(run, key)[r] if r < len(run["rounds"]) else None for run in runs])


def lcm_pooled(run: dict[str, Any]) -> tuple[int, int, int, int]:
    """(masks corrected, of them with a non-void GT majority, right before, right after) over all rounds."""
    tot = valid = before = after = 0
    for m in run.get("lcm") or []:
        if m:
            tot += m["corrected"]
            valid += m["corrected"] - m.get("void_gt", 0)
            before += m["correct_before"]
            after += m["correct_after"]
    return tot, valid, before, after


def pooled_accuracy(runs: list[dict[str, Any]]) -> tuple[float, float, int] | None:
    """LCM accuracy before / after (%) pooled over the corrected masks of all ``runs``: Σ right ÷ Σ corrected
    (masks with a non-void GT majority), so a seed with many corrections weighs by its masks, not by one
    seed's percentage. Returns (before, after, masks) or None when no run corrected a mask."""
    pooled = [lcm_pooled(r) for r in runs]
    valid = sum(v for _, v, _, _ in pooled)
    if not valid:
        return None
    return 100 * sum(b for _, _, b, _ in pooled) / valid, 100 * sum(a for *_, a in pooled) / valid, valid


def first_reach(run: dict[str, Any], target: float) -> int | None:
    """Cumulative budget at the first round whose Data mIoU reaches ``target`` (None if never)."""
    for r in run["rounds"]:
        if r.get("data_miou") is not None and r["data_miou"] >= target:
            return int(r["budget_used"])
    return None


# --------------------------------------------------------------------------- tables
def _rounds_header(first: str, n: int = 6) -> list[str]:
    return [f"| {first} | " + " | ".join("Init." if k == 0 else f"{k}R" for k in range(n)) + " |",
            "| --- |" + " --- |" * n]


def table1(runs, preset: str) -> list[str]:
    out = _rounds_header("method · metric")
    for key, label in (("data_miou", "Data mIoU"), ("model_miou", "Model mIoU")):
        for cfg, name in (("alc", "ALC"), ("a2lc", "A²LC")):
            rs = runs.get((preset, cfg), [])
            out.append(f"| {name} · {label} | " + " | ".join(fmt(per_round(rs, key, k)) for k in range(6)) + " |")
    for cfg, name in (("alc", "ALC"), ("a2lc", "A²LC")):
        paper = PAPER_TABLE1.get((preset, cfg))
        out.append(f"| paper {name} · Data mIoU | " + " | ".join(f"{v:.2f}" for v in paper) + " |")
    return out


def table5(runs, preset: str) -> list[str]:
    out = ["| LCM | ABC | Mask | " + " | ".join(f"Data {k}R" for k in range(1, 6)) + " | Model 5R |",
           "| --- | --- | --- |" + " --- |" * 6]
    for cfg, lcm, abc, mask in TABLE5:
        rs = runs.get((preset, cfg), [])
        cells = [fmt(per_round(rs, "data_miou", k)) for k in range(1, 6)] + [fmt(per_round(rs, "model_miou", 5))]
        out.append(f"| {lcm} | {abc} | {mask} | " + " | ".join(cells) + " |")
    if preset == "city":  # the paper's Table 5 is on Cityscapes only
        for cfg, lcm, abc, mask in TABLE5:
            marks = " | ".join(m or "·" for m in (lcm, abc, mask))
            out.append(f"| paper: {marks} | " + " | ".join(f"{v:.2f}" for v in PAPER_TABLE5[cfg]) + " |")
    return out


def table4(runs) -> list[str]:
    out = ["| acquisition function | " + " | ".join(f"{p} | paper ({p})" for p in PRESETS) + " |",
           "| --- |" + " --- |" * (2 * len(PRESETS))]
    for cfg, name in (("init", "Init."), *TABLE4):
        run, r = ("a2lc", 0) if cfg == "init" else (cfg, 5)  # Init. = round 0, shared by every configuration
        out.append(f"| {name} | " + " | ".join(f"{fmt(per_round(runs.get((p, run), []), 'data_miou', r))} | "
                                               f"{PAPER_TABLE4[cfg][i]:.2f}" for i, p in enumerate(PRESETS)) + " |")
    return out


def table3(runs) -> list[str]:
    out = ["| preset | configuration | masks corrected (5 rounds) | accuracy before (%) | accuracy after (%) | Data mIoU 5R |",
           "| --- | --- | --- | --- | --- | --- |"]
    for p in PRESETS:
        for cfg, name in LCM_CONFIGS:
            rs = runs.get((p, cfg), [])  # a configuration without runs stays as a row of "—"
            acc = pooled_accuracy(rs)
            acc_b, acc_a = (f"{acc[0]:.2f}", f"{acc[1]:.2f}") if acc else ("—", "—")
            out.append(f"| {p} | {name} | {fmt(stats([lcm_pooled(r)[0] for r in rs]))} | {acc_b} | {acc_a} | "
                       f"{fmt(per_round(rs, 'data_miou', 5))} |")
        n, before, after = PAPER_TABLE3[p]
        out.append(f"| {p} | paper (A²LC) | {n:,} | {before:.2f} | {after:.2f} | {PAPER_TABLE1[(p, 'a2lc')][-1]:.2f} |")
    return out


SWITCHES = (("a2lc", "A²LC, defaults"), ("a2lc-softmax-ce", "lcm.loss = softmax-ce"),
            ("a2lc-kl-all", "method.kl_uniform = all"), ("a2lc-tail-ceil", "lcm.tail_size = ceil"),
            ("a2lc-tau-cityscapes", "lcm.tau = Cityscapes schedule"), ("alc", "ALC, defaults"),
            ("alc-relabel-always", "method.pixel_relabel = always"))
SWITCH_ONLY = {"a2lc-tau-cityscapes": "voc"}  # switches that exist for one preset only (bench/quality.py ONLY_PRESET)


def switch_table(runs) -> list[str]:
    out = ["| preset | configuration | Data mIoU 1R | Data mIoU 5R | Model mIoU 5R | LCM corrections (5 rounds) |",
           "| --- | --- | --- | --- | --- | --- |"]
    for p in PRESETS:
        for cfg, name in SWITCHES:
            if SWITCH_ONLY.get(cfg, p) != p:
                continue
            rs = runs.get((p, cfg), [])  # a switch without runs stays as a row of "—": what is missing shows
            pooled = stats([lcm_pooled(r)[0] for r in rs])
            out.append(f"| {p} | {name} | {fmt(per_round(rs, 'data_miou', 1))} | {fmt(per_round(rs, 'data_miou', 5))} | "
                       f"{fmt(per_round(rs, 'model_miou', 5))} | {fmt(pooled)} |")
    return out


def table3_rounds(runs, preset: str) -> list[str]:
    """A²LC's corrections per round (sum over seeds) with pooled accuracies."""
    rs = runs.get((preset, "a2lc"), [])
    out = ["| round | τ | masks corrected (all seeds) | accuracy before (%) | accuracy after (%) |",
           "| --- | --- | --- | --- | --- |"]
    for k in range(5):
        ms = [r["lcm"][k] for r in rs if r.get("lcm") and k < len(r["lcm"]) and r["lcm"][k]]
        if not ms:
            continue
        tot = sum(m["corrected"] for m in ms)
        valid = sum(m["corrected"] - m.get("void_gt", 0) for m in ms)
        b = sum(m["correct_before"] for m in ms)
        a = sum(m["correct_after"] for m in ms)
        pct = (lambda x: f"{100 * x / valid:.1f}") if valid else (lambda x: "—")
        out.append(f"| {k + 1} | {ms[0].get('tau')} | {tot} | {pct(b)} | {pct(a)} |")
    return out


def budget_table(runs) -> list[str]:
    """Budget at which A²LC (steps of B, and B/2 with the half-budget run) first reaches ALC's 5R Data mIoU."""
    out = ["| preset | seed | ALC 5R Data mIoU | ALC budget (5 rounds) | A²LC reaches it at | A²LC (B/2 steps) reaches it at | share of ALC's budget |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in PRESETS:
        alc = {r["seed"]: r for r in runs.get((p, "alc"), [])}
        full = {r["seed"]: r for r in runs.get((p, "a2lc"), [])}
        half = {r["seed"]: r for r in runs.get((p, "a2lc-half"), [])}
        for s in sorted(alc):
            target = alc[s]["rounds"][-1]["data_miou"]
            total = alc[s]["rounds"][-1]["budget_used"]
            reach = [b for b in (first_reach(full[s], target) if s in full else None,
                                 first_reach(half[s], target) if s in half else None) if b is not None]
            f_cell = lambda run: ("not within 5 rounds" if first_reach(run, target) is None else str(first_reach(run, target)))  # noqa: E731
            share = f"{100 * min(reach) / total:.0f}%" if reach else "—"
            out.append(f"| {p} | {s} | {target:.2f} | {total} | {f_cell(full[s]) if s in full else '—'} | "
                       f"{f_cell(half[s]) if s in half else '—'} | {share} |")
    return out


def per_class_table(runs, preset: str) -> list[str]:
    """Per-class Data IoU: initial, ALC 5R, A²LC 5R (means over seeds)."""
    a2 = runs.get((preset, "a2lc"), [])
    al = runs.get((preset, "alc"), [])
    if not a2 or not al or not a2[0].get("data_iou_last"):
        return []
    names = list(a2[0]["data_iou_last"])
    mean = lambda rs, key, c: np.mean([r[key][c] for r in rs if r.get(key) and r[key].get(c) is not None])  # noqa: E731
    out = ["| class | Init. | ALC 5R | A²LC 5R | masks queried ALC / A²LC (all seeds) |", "| --- | --- | --- | --- | --- |"]
    qa = np.sum([r["queried_by_class"] for r in al], 0)
    q2 = np.sum([r["queried_by_class"] for r in a2], 0)
    for i, c in enumerate(names):
        out.append(f"| {c} | {mean(a2, 'data_iou_init', c):.1f} | {mean(al, 'data_iou_last', c):.1f} | "
                   f"{mean(a2, 'data_iou_last', c):.1f} | {qa[i]} / {q2[i]} |")
    return out


def error_table(runs) -> list[str]:
    """The pool of wrong masks against the budget, and how the queries of ALC and A²LC hit it (means over seeds)."""
    out = ["| preset | masks | wrong at start | impure masks | budget, 5 rounds | wrong left after 5R (ALC / A²LC) | "
           "queried masks that were wrong, 1R→5R (ALC) | (A²LC) | ALC's pixel answer = mask's GT majority |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in PRESETS:
        al = [r for r in runs.get((p, "alc"), []) if r.get("errors")]
        a2 = [r for r in runs.get((p, "a2lc"), []) if r.get("errors")]
        if not al or not a2:
            continue
        e = lambda rs, f: np.mean([f(r["errors"]) for r in rs])  # noqa: E731
        hits = lambda rs: " → ".join(f"{100 * np.mean([r['errors']['rounds'][k]['queried_wrong_share'] for r in rs]):.0f}%"  # noqa: E731
                                     for k in range(len(rs[0]["errors"]["rounds"])))
        masks, wrong = e(al, lambda x: x["masks"]), e(al, lambda x: x["wrong_start"])
        out.append(
            f"| {p} | {masks:.0f} | {wrong:.0f} ({100 * wrong / masks:.1f}%) | {100 * e(al, lambda x: x['impure_share']):.1f}% | "
            f"{np.mean([r['rounds'][-1]['budget_used'] for r in al]):.0f} | "
            f"{e(al, lambda x: x['rounds'][-1]['wrong_left']):.0f} / {e(a2, lambda x: x['rounds'][-1]['wrong_left']):.0f} | "
            f"{hits(al)} | {hits(a2)} | "
            f"{100 * np.mean([k['answer_is_gt_majority'] for r in al for k in r['errors']['rounds']]):.1f}% |")
    return out


def load_bases(bases: Path | None) -> list[dict[str, Any]]:
    """The round-0 error-mix files written by ``bench/quality.py`` (one per preset and seed)."""
    if bases is None or not Path(bases).is_dir():
        return []
    return [json.loads(f.read_text()) for f in sorted(Path(bases).glob("*.json"))]


def mix_table(bases: list[dict[str, Any]]) -> list[str]:
    """What kind of masks are wrong in round 0 (means over seeds): the head/tail mix and ABC's class weight."""
    kinds = (("tail_label_head_truth", "label tail, truth head"), ("head_label_tail_truth", "label head, truth tail"),
             ("both_tail", "both tail"), ("both_head", "both head"))
    out = ["| preset | KL (Eq. 8) | wrong masks | " + " | ".join(f"{n}: masks / pixels" for _, n in kinds) +
           " | mean w of the label (Eq. 9): wrong / right masks |", "| --- | --- | --- |" + " --- |" * (len(kinds) + 1)]
    for p in PRESETS:
        bs = [b for b in bases if b["preset"] == p]
        if not bs:
            continue
        share = lambda k, unit, total: np.mean([100 * b["mix"][k][unit] / max(b[total], 1) for b in bs])  # noqa: E731
        out.append(f"| {p} | {np.mean([b['kl'] for b in bs]):.2f} | {np.mean([b['wrong'] for b in bs]):.0f} | " +
                   " | ".join(f"{share(k, 'masks', 'wrong'):.0f}% / {share(k, 'pixels', 'wrong_pixels'):.0f}%" for k, _ in kinds) +
                   f" | {np.mean([b['w_label_wrong'] for b in bs]):.3f} / {np.mean([b['w_label_right'] for b in bs]):.3f} |")
    return out


def targets(runs) -> list[str]:
    """SPEC §5's targets, checked on the saved runs."""
    lines = []
    for p in PRESETS:
        a2 = {r["seed"]: r for r in runs.get((p, "a2lc"), [])}
        al = {r["seed"]: r for r in runs.get((p, "alc"), [])}
        seeds = sorted(set(a2) & set(al))
        if not seeds:
            continue
        d = [a2[s]["rounds"][-1]["data_miou"] - al[s]["rounds"][-1]["data_miou"] for s in seeds]
        wins = sum(x > 0 for x in d)
        lines.append(f"- `{p}`: A²LC − ALC Data mIoU after 5 rounds = {fmt(stats(d), n_expected=len(seeds))} points; "
                     f"A²LC ahead in {wins} of {len(seeds)} seeds. "
                     f"**{'met' if wins == len(seeds) and np.mean(d) > 0 else 'not met'}**.")
        halves = []
        for s in seeds:
            target, total = al[s]["rounds"][-1]["data_miou"], al[s]["rounds"][-1]["budget_used"]
            cands = [first_reach(run, target) for run in (a2[s], *[r for r in runs.get((p, "a2lc-half"), []) if r["seed"] == s])]
            cands = [c for c in cands if c is not None]
            halves.append(min(cands) / total if cands else None)
        ok = all(h is not None and h <= 0.5 for h in halves)
        shown = ", ".join("never" if h is None else f"{100 * h:.0f}%" for h in halves)
        lines.append(f"- `{p}`: budget A²LC needs to reach ALC's round-5 Data mIoU, per seed: {shown} of ALC's "
                     f"(target ≤ 50%). **{'met' if ok else 'not met'}**.")
        pooled = [lcm_pooled(r) for r in a2.values()]
        b = sum(x[2] for x in pooled)
        a = sum(x[3] for x in pooled)
        v = sum(x[1] for x in pooled)
        if v:
            lines.append(f"- `{p}`: LCM's corrected masks right before / after: {100 * b / v:.1f}% / {100 * a / v:.1f}% "
                         f"({v} masks, all seeds). **{'met' if a > b else 'not met'}**.")
        full = [r["rounds"][-1]["data_miou"] for r in runs.get((p, "a2lc"), [])]
        subsets = {cfg: stats([r["rounds"][-1]["data_miou"] for r in runs.get((p, cfg), [])]) for cfg, *_ in TABLE5[:-1]}
        if full and all(subsets.values()):
            best = max(subsets, key=lambda c: subsets[c][0])
            ok = np.mean(full) >= subsets[best][0]
            lines.append(f"- `{p}`: ablation order (all three ≥ any subset, 5R Data mIoU): all three {np.mean(full):.2f}, "
                         f"best subset `{best}` {subsets[best][0]:.2f}. **{'met' if ok else 'not met'}**.")
    return lines


# --------------------------------------------------------------------------- beyond the paper
BEYOND = (("a2lc", "A²LC (paper's LCM rule)"), ("a2lc+", "A²LC+ (calibrated LCM)"), ("a2lc-no-lcm", "ABC + mask, LCM off"),
          ("alc", "ALC"), ("a2lc-half", "A²LC, B/2"), ("a2lc+-half", "A²LC+, B/2"), ("alc-half", "ALC, B/2"))


def _seeds(rs) -> str:
    return ", ".join(str(r["seed"]) for r in rs) or "none"


def beyond_rounds(runs, preset: str) -> list[str]:
    """Per round: corrections and their measured accuracy under the paper's rule (a2lc) and the calibrated
    selection (a2lc+), summed over the seeds present; for a2lc+ also the estimated precision and its bound
    (correction-weighted over the seeds)."""
    cal = runs.get((preset, "a2lc+"), [])
    paper = [r for r in runs.get((preset, "a2lc"), []) if r["seed"] in {c["seed"] for c in cal}]  # the same seeds
    out = [f"Seeds: {_seeds(cal)} (both columns).", "",
           "| round | paper: corrected | paper: accuracy (%) | calibrated: corrected | calibrated: accuracy (%) | "
           "calibrated: estimated precision (%) | calibrated: bound (%) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for k in range(5):
        cells = []
        for rs, calibrated in ((paper, False), (cal, True)):
            ms = [r["lcm"][k] for r in rs if r.get("lcm") and k < len(r["lcm"]) and r["lcm"][k]]
            tot = sum(m["corrected"] for m in ms)
            valid = sum(m["corrected"] - (m.get("void_gt") or 0) for m in ms)
            right = sum(m.get("correct_after") or 0 for m in ms)
            cells += [str(tot) if ms else "—", f"{100 * right / valid:.1f}" if valid else "—"]
            if calibrated:
                w = [(m["corrected"], m.get("estimated_precision"), m.get("precision_bound")) for m in ms
                     if m["corrected"] and m.get("precision_bound") is not None]
                n = sum(x[0] for x in w)
                cells += [f"{100 * sum(x[0] * x[1] for x in w) / n:.1f}" if n else "—",
                          f"{100 * sum(x[0] * x[2] for x in w) / n:.1f}" if n else "—"]
        out.append(f"| {k + 1} | " + " | ".join(cells) + " |")
    return out


def beyond_miou(runs) -> list[str]:
    out = ["| configuration | " + " | ".join(f"{p} Data 5R | {p} Model 5R" for p in PRESETS) + " |",
           "| --- |" + " --- |" * (2 * len(PRESETS))]
    for cfg, name in BEYOND:
        cells = []
        for p in PRESETS:
            rs = runs.get((p, cfg), [])
            cells += [fmt(per_round(rs, "data_miou", 5)), fmt(per_round(rs, "model_miou", 5))]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def _calibrated_pooled(run) -> tuple[int, int, float | None, float | None]:
    """(corrections with a non-void GT majority, right ones, correction-weighted estimate, bound) over all rounds."""
    ms = [m for m in run.get("lcm") or [] if m]
    valid = sum(m["corrected"] - (m.get("void_gt") or 0) for m in ms)
    right = sum(m.get("correct_after") or 0 for m in ms)
    w = [(m["corrected"], m["estimated_precision"], m["precision_bound"]) for m in ms
         if m["corrected"] and m.get("precision_bound") is not None]
    n = sum(x[0] for x in w)
    return valid, right, (sum(x[0] * x[1] for x in w) / n if n else None), (sum(x[0] * x[2] for x in w) / n if n else None)


def beyond_goals(runs) -> list[str]:
    """The goals of the calibrated selection (issue 18), per (preset, seed) where the runs exist."""
    lines = []
    for p in PRESETS:
        cal = {r["seed"]: r for r in runs.get((p, "a2lc+"), [])}
        paper = {r["seed"]: r for r in runs.get((p, "a2lc"), [])}
        off = {r["seed"]: r for r in runs.get((p, "a2lc-no-lcm"), [])}
        if not cal:
            lines.append(f"- `{p}`: no `a2lc+` run yet: not measured.")
            continue
        acc, vs_bound = [], []
        for s, r in sorted(cal.items()):
            valid, right, est, bound = _calibrated_pooled(r)
            a = right / valid if valid else None
            acc.append(f"seed {s}: {'no corrections' if a is None else f'{100 * a:.1f}% of {valid}'}")
            if a is not None and bound is not None:
                vs_bound.append((s, a, est, bound))
        ok = all(x[1] >= 0.9 for x in vs_bound)
        verdict = "met" if ok and vs_bound else ("vacuous: no corrections" if not vs_bound else "not met")
        tested = [s for s, *_ in vs_bound]  # a seed without corrections neither meets nor misses the goal
        none = [s for s in sorted(cal) if s not in tested]
        pl = lambda n: "s" if n != 1 else ""  # noqa: E731
        scope = (f"tested on {len(tested)} seed{pl(len(tested))} with corrections: {', '.join(map(str, tested))}"
                 if tested else f"seeds {_seeds(list(cal.values()))}")
        if tested and none:
            scope += f"; {len(none)} seed{pl(len(none))} ({', '.join(map(str, none))}) made none, not tested"
        lines.append(f"- `{p}`: accuracy of the calibrated corrections, pooled over rounds ≥ 90%: {'; '.join(acc)}. "
                     f"**{verdict}** ({scope}).")
        if vs_bound:
            shown = "; ".join(f"seed {s}: measured {100 * a:.1f}%, bound {100 * b:.1f}%, estimate {100 * e:.1f}%"
                              for s, a, e, b in vs_bound)
            ok = all(a >= b - (e - b) for _, a, e, b in vs_bound)
            lines.append(f"- `{p}`: measured accuracy never below the bound by more than the interval (estimate − bound): "
                         f"{shown}. **{'met' if ok else 'not met'}**.")
        both = sorted(set(cal) & set(paper))
        if p == "city" and both:
            n_cal = [sum(m["corrected"] for m in cal[s]["lcm"] if m) for s in both]
            n_pap = [sum(m["corrected"] for m in paper[s]["lcm"] if m) for s in both]
            ok = all(a > b for a, b in zip(n_cal, n_pap))
            lines.append(f"- `{p}`: more corrections than the paper's rule, per seed ({', '.join(map(str, both))}): "
                         f"{' / '.join(map(str, n_cal))} vs {' / '.join(map(str, n_pap))}. **{'met' if ok else 'not met'}**.")
        for other, label in ((paper, "`a2lc`"), (off, "the same run with LCM off (`a2lc-no-lcm`)")):
            both = sorted(set(cal) & set(other))
            if not both:
                lines.append(f"- `{p}`: Data mIoU of `a2lc+` ≥ {label}: not measured (no paired seed).")
                continue
            d = [cal[s]["rounds"][-1]["data_miou"] - other[s]["rounds"][-1]["data_miou"] for s in both]
            ok = all(x >= 0 for x in d)
            lines.append(f"- `{p}`: Data mIoU after 5 rounds of `a2lc+` ≥ {label}, per seed ({', '.join(map(str, both))}): "
                         f"{', '.join(f'{x:+.2f}' for x in d)} points. **{'met' if ok else 'not met'}**.")
    return lines


# --------------------------------------------------------------------------- plots
def plot_curves(runs, preset: str, path: Path) -> Path:
    """Data and Model mIoU per round (mean ± std over seeds) for the Table 5 configurations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"alc": "ALC (none)", "lcm": "LCM", "abc": "ABC", "lcm+abc": "LCM+ABC", "a2lc": "A²LC (all)",
              "a2lc-half": "A²LC, B/2 per round"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "data_miou", "Data mIoU (train labels)"), (axes[1], "model_miou", "Model mIoU (val)")):
        for cfg, label in labels.items():
            rs = runs.get((preset, cfg), [])
            if not rs:
                continue
            budget = np.array(curve(rs[0], "budget_used"), float) / max(1, rs[0]["budget_per_round"] / (0.5 if cfg == "a2lc-half" else 1))
            ys = np.array([[np.nan if v is None else v for v in curve(r, key)] for r in rs], float)
            m, s = np.nanmean(ys, 0), np.nanstd(ys, 0)
            ax.plot(budget, m, label=label, lw=2.2 if cfg in ("a2lc", "alc") else 1.2,
                    **method_style(list(labels).index(cfg)))  # its own line style and marker: equal curves stay visible
            ax.fill_between(budget, m - s, m + s, alpha=0.15)
        ax.set_xlabel("budget used (× B, the per-round budget)")
        ax.set_ylabel("mIoU (%)")
        ax.set_title(f"{title} — {preset}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_queried(runs, preset: str, path: Path) -> Path | None:
    """Queried-class distribution of ALC and A²LC, summed over seeds (paper Fig. 5)."""
    agg = {}
    for cfg in ("alc", "a2lc"):
        rs = runs.get((preset, cfg), [])
        if not rs:
            return None
        agg[cfg] = {"classes": rs[0]["classes"], "pseudo_frequency": np.sum([r["pseudo_frequency"] for r in rs], 0).tolist(),
                    "queried_by_class": np.sum([r["queried_by_class"] for r in rs], 0).tolist()}
    return plot_queried_classes(agg, path)


# --------------------------------------------------------------------------- document
def _span(values: list[int]) -> str:
    """``"207–211"`` (or ``"211"`` when all equal): the range of a per-seed count."""
    lo, hi = min(values), max(values)
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


def mask_count(runs: list[dict[str, Any]]) -> str:
    """``≈10.5k`` / ``2,934–3,056``: the masks of the runs' datasets (their ``errors.masks``), "? " without runs."""
    n = sorted({int(r["errors"]["masks"]) for r in runs if (r.get("errors") or {}).get("masks")})
    if not n:
        return "? "
    if n[0] >= 10_000:
        return f"≈{n[0] / 1000:.1f}k" if round(n[0], -2) == round(n[-1], -2) else f"{n[0] / 1000:.1f}k–{n[-1] / 1000:.1f}k"
    return _span(n)


def generated_section(runs, docs: Path, bases: list[dict[str, Any]] | None = None) -> str:
    n_runs = sum(len(v) for v in runs.values())
    any_run = next(iter(runs.values()))[0]
    parts = [START, "",
             f"*Generated from {n_runs} runs of benchmark v{any_run.get('benchmark_version', 1)} in "
             f"`bench/results/quality-v{any_run.get('benchmark_version', 1)}/` by `bench/quality_report.py` "
             f"(machine: {any_run['machine']}). Regenerate with "
             "`make bench-quality` (runs what is missing, then writes this) or `python bench/quality.py --report-only`.*", ""]
    budgets = {p: _span([r["budget_per_round"] for r in runs[(p, "a2lc")]]) for p in PRESETS if runs.get((p, "a2lc"))}
    shares = {p: runs[(p, "a2lc")][0]["budget_share"] for p in PRESETS if runs.get((p, "a2lc"))}
    masks = {p: mask_count(runs.get((p, "a2lc"), [])) for p in PRESETS}
    parts += ["## Setup", "",
              f"Built-in benchmark at its default sizes (`city`: 300 train / 120 val images of 96×192, {masks['city']} masks; "
              f"`voc`: 400 / 120 of 96×128, {masks['voc']} masks), the default `tiny` model, seeds 0–2. Budget per round "
              "B = a share of all masks (" + ", ".join(f"`{p}`: {100 * shares[p]:.0f}%, {b} masks"
                                                     for p, b in budgets.items()) +
              "); the paper gives 10k masks per round on Cityscapes and 1k on PASCAL VOC. Every configuration of a "
              "(preset, seed) starts from the same round 0 (pseudo-labels and θ_0). Mean ± sample std over seeds.", ""]
    parts += ["## Targets (SPEC §5)", "", *targets(runs), ""]
    for p in PRESETS:
        if not runs.get((p, "a2lc")):
            continue
        parts += [f"## Table 1 — `{p}`: Data and Model mIoU per round (%)", "", *table1(runs, p), "",
                  f"![mIoU per round, {p}](results/miou-{p}.png)", ""]
        plot_curves(runs, p, docs / "results" / f"miou-{p}.png")
    parts += ["## Budget to reach ALC's round-5 Data mIoU", "", *budget_table(runs), ""]
    t = error_table(runs)
    if len(t) > 2:
        parts += ["## The pool of wrong masks", "",
                  "Wrong = the mask's label differs from its ground-truth majority; \"wrong at start\" leaves masks with a "
                  "void majority out of the count (its share is of all masks), the \"queried masks that were wrong\" "
                  "columns count a queried void-majority mask as wrong; "
                  "impure = the majority class holds < 75% of the mask's non-void pixels.", "", *t, ""]
    t = mix_table(bases or [])
    if len(t) > 2:
        parts += ["Which masks are wrong in round 0. Tail = the ⌊C/2⌋ classes with the fewest round-0 label pixels "
                  "(α = 0.5); ABC's weight w (Eq. 9) follows the mask's *current label*, so it can lift a wrong mask "
                  "only when the label is a rare class — what the paper calls correcting \"masks misclassified as "
                  "tail class labels\".", "", *t, ""]
    parts += ["## Table 3 — label correction module", "",
              "Masks corrected: mean ± std over seeds of each seed's 5-round total. Accuracy = share of the corrected "
              "masks (non-void GT majority) whose label equals the GT majority, pooled over the masks of all rounds and "
              "seeds (Σ right ÷ Σ corrected, not a mean of per-seed percentages). \"—\": no run of that configuration.", "", *table3(runs), ""]
    for p in PRESETS:
        t = table3_rounds(runs, p)
        if len(t) > 2:
            parts += [f"A²LC per round, `{p}`:", "", *t, ""]
    t = switch_table(runs)
    if len(t) > 2:
        parts += ["## Faithful-reproduction switches", "",
                  "Where the paper's text and the authors' code differ (see \"Faithful-reproduction switches\" "
                  "above): A²LC/ALC with the default reading and with the other one, 5 rounds; \"—\": no run yet.", "", *t, ""]
    parts += ["## Table 4 — acquisition functions (Data mIoU after 5 rounds, %)", "",
              "Inside the A²LC framework (mask-level query, LCM on), only the acquisition function changes.", "",
              *table4(runs), ""]
    for p in PRESETS:
        if any(runs.get((p, c)) for c, *_ in TABLE5):
            parts += [f"## Table 5 — `{p}`: ablation (%)", "",
                      "Columns: LCM, ABC acquisition (else SIM), Mask-level query (else pixel-level with expansion).", "",
                      *table5(runs, p), ""]
    if any(runs.get((p, "a2lc+")) for p in PRESETS):
        parts += ["## Beyond the paper — calibrated LCM selection (`a2lc+`)", "",
                  "`a2lc+` = A²LC with `lcm.selection=calibrated` (docs/lcm-calibrated.md): ψ on all rounds' answers, "
                  "per-class thresholds from 5-fold cross-fitting whose 95% Wilson lower bound of precision reaches 0.9, "
                  "and ψ's class must be the segmentation model's. Goals (issue 18):", "", *beyond_goals(runs), "",
                  "Data and Model mIoU after 5 rounds (%), including half the budget per round (B/2):", "",
                  *beyond_miou(runs), ""]
        for p in PRESETS:
            if runs.get((p, "a2lc+")):
                parts += [f"Corrections per round, `{p}` (summed over the seeds present):", "", *beyond_rounds(runs, p), ""]
    for p in PRESETS:
        t = per_class_table(runs, p)
        if t:
            parts += [f"## Per-class Data IoU after 5 rounds — `{p}`", "", *t, ""]
            if plot_queried(runs, p, docs / "results" / f"queried-{p}.png"):
                parts += [f"![queried classes, {p}](results/queried-{p}.png)", ""]
    parts.append(END)
    return "\n".join(parts)


def write_results(results: Path, docs: Path, *, bases: Path | None = None) -> Path:
    """Rewrite the generated part of ``docs/results.md`` (creating the file if needed)."""
    runs = load_runs(results)
    path = Path(docs) / "results.md"
    if not runs:
        raise SystemExit(f"no results in {results}; run bench/quality.py first")
    body = generated_section(runs, Path(docs), load_bases(bases))
    if path.exists() and START in path.read_text():
        old = path.read_text()
        text = old[: old.index(START)] + body + old[old.index(END) + len(END):]
    else:
        text = "# Results on the built-in benchmark\n\n" + body + "\n"
    write_text_atomic(path, text)
    return path


if __name__ == "__main__":
    from quality import BASES, RESULTS  # the current benchmark version's folders

    print(write_results(RESULTS, ROOT / "docs", bases=BASES))
