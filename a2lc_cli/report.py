"""Reports: per-round metrics of one or more workspaces as tables, JSON, Markdown and PNG plots.

The plots mirror the paper: mIoU per round per method (Table 1 / Fig. 1) and the
class distribution of the queried masks per method, classes sorted by
pseudo-label frequency (Fig. 5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import A2LCError
from .state import Dataset, read_query
from .status import lcm_line, lcm_round, lcm_summary, saved_metric
from .workspace import Workspace, write_bytes_atomic, write_text_atomic


def method_label(name: str) -> str:
    """How a method's workspace name is shown: the presets in capitals (A2LC, ALC, A2LC+), other names as given."""
    return name.upper() if name in ("a2lc", "alc", "a2lc+") else name


def collect_run(ws: Workspace) -> dict[str, Any]:
    """Per-round metrics saved in a workspace, cumulative budget, and queried masks per class.

    A round's Data mIoU that was never evaluated (typically round 0, the pseudo-labels:
    ``round`` evaluates rounds ≥ 1 only when they run) is computed here and saved, as
    ``a2lc evaluate`` would: it takes seconds and is the baseline every round compares with.
    """
    if not ws.dataset_path.exists():
        raise A2LCError(f"{ws.root} has no dataset.h5; nothing to report")
    with Dataset(ws.dataset_path) as ds:
        names = list(ds.classes.names)
        has_gt = ds.has_gt
        freq = np.bincount(ds.mask_label0[ds.mask_label0 != 255].astype(np.int64),
                           weights=ds.mask_area[ds.mask_label0 != 255], minlength=len(names))[: len(names)]
    rounds, used = [], 0
    queried = np.zeros(len(names), np.int64)
    r = 0
    while r == 0 or ws.path("query", r).exists():
        row: dict[str, Any] = {"round": r}
        if r > 0:
            q = read_query(ws.path("query", r))
            used += int(len(q.selected))
            _, labels = q.answers.effective()
            queried += np.bincount(labels[labels != 255].astype(np.int64), minlength=len(names))[: len(names)]
        row["budget_used"] = used
        for metric, key in (("data-miou", "data_miou"), ("model-miou", "model_miou")):
            m = saved_metric(ws, r, metric)
            if m is None and metric == "data-miou" and has_gt:
                from .evaluate import run_metric

                m = run_metric(ws, "data-miou", r)
            row[key] = None if m is None else m.get("miou")
        acc = saved_metric(ws, r, "lcm-accuracy")
        if acc is not None:
            row.update({"lcm_corrected": acc.get("corrected"), "lcm_accuracy_before": acc.get("accuracy_before"),
                        "lcm_accuracy_after": acc.get("accuracy_after"), "lcm_selection": acc.get("selection", "paper"),
                        "lcm_estimated_precision": acc.get("estimated_precision"),
                        "lcm_precision_bound": acc.get("precision_bound")})
        lcm = lcm_round(ws, r)
        if lcm is not None:
            row["lcm"] = lcm
        rounds.append(row)
        r += 1
    first, last = saved_metric(ws, 0, "data-miou"), saved_metric(ws, r - 1, "data-miou")
    per_class = {"init": (first or {}).get("per_class"), "last": (last or {}).get("per_class")}
    return {"workspace": str(ws.root), "rounds": rounds, "lcm": lcm_summary(rounds), "classes": names, "data_iou_per_class": per_class,
            "pseudo_frequency": freq.tolist(), "queried_by_class": queried.tolist()}


def save_png(fig: Any, path: Path) -> None:
    """Render ``fig`` as PNG in memory, then write it atomically: a full or read-only disk is one
    error naming ``path`` and leaves no empty or half-written image behind (issue 15)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_bytes_atomic(Path(path), buf.getvalue())


def plot_miou(runs: dict[str, dict[str, Any]], path: Path) -> Path:
    """Data and Model mIoU per round, one line per method (PNG at ``path``)."""
    import matplotlib.pyplot as plt

    fig = miou_figure(runs)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return path


LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "x", "P", "*")


def method_style(j: int) -> dict[str, Any]:
    """The j-th method's line style and marker in the plots: every method its own, so that identical
    curves (e.g. a2lc and a2lc+ when LCM corrected nothing) stay visible on top of each other."""
    return {"linestyle": LINE_STYLES[j % len(LINE_STYLES)], "marker": MARKERS[j % len(MARKERS)],
            "markersize": 7 - 1.2 * (j % 3), "markerfacecolor": "none" if j % 2 else None}


def miou_figure(runs: dict[str, dict[str, Any]]):
    """The matplotlib figure of :func:`plot_miou`: whole-number round ticks, a readable mIoU span, and in
    a panel without any value (e.g. Model mIoU of a workspace that only trained θ_0) a note saying why
    and the command that computes it, instead of an empty frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    last = max((r["round"] for run in runs.values() for r in run["rounds"]), default=0)
    for ax, key, title in ((axes[0], "data_miou", "Data mIoU (train labels)"), (axes[1], "model_miou", "Model mIoU (val)")):
        ys: list[float] = []
        for j, (name, run) in enumerate(runs.items()):
            pts = [(r["round"], r[key]) for r in run["rounds"] if r.get(key) is not None]
            if pts:
                x, y = zip(*pts)
                ys += y
                ax.plot(x, y, label=method_label(name), **method_style(j))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
        ax.set_xlim(-0.5, max(last, 1) + 0.5)
        if ys and max(ys) - min(ys) < 2:  # a single point or a flat line: a readable span, not ±0.04
            mid = (max(ys) + min(ys)) / 2
            ax.set_ylim(max(0.0, mid - 5), min(100.0, mid + 5))
        ax.set_xlabel("round")
        ax.set_ylabel("mIoU (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ys:
            ax.legend()
        else:  # never an empty frame: say what is missing and how to get it
            why = ("no ground truth for the train labels" if key == "data_miou" else
                   f"not evaluated yet:\na2lc evaluate --metric model-miou --r {last}")
            ax.text(0.5, 0.5, f"no {title.split(' (')[0]}\n({why})", ha="center", va="center",
                    transform=ax.transAxes, color="0.35")
            ax.set_yticks([])
    return fig


def plot_queried_classes(runs: dict[str, dict[str, Any]], path: Path) -> Path:
    """Answered (queried) masks per class per method; classes sorted by pseudo-label frequency (Fig. 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(runs.values()))
    order = np.argsort(-np.asarray(first["pseudo_frequency"]), kind="stable")
    names = [first["classes"][k] for k in order]
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(names) + 2), 4))
    for j, (name, run) in enumerate(runs.items()):
        counts = np.asarray(run["queried_by_class"])[order]
        ax.bar(np.arange(len(names)) + (j - (len(runs) - 1) / 2) * width, counts, width,
               label=method_label(name))
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right")
    ax.set_ylabel("queried masks")
    ax.set_title("Class of queried masks (classes sorted by pseudo-label frequency)")
    ax.legend()
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return path


def table_rows(runs: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(key, label, method, run) of the per-round table's rows: Data mIoU, Model mIoU, masks queried, and the
    LCM's corrections for each method whose workspace has any (the demo's console table and ``report.md``)."""
    rows = [(key, label, name, run) for key, label in (("data_miou", "Data mIoU"), ("model_miou", "Model mIoU"),
                                                       ("budget_used", "masks queried")) for name, run in runs.items()]
    return rows + [("lcm_corrected", "LCM corrections", name, run) for name, run in runs.items()
                   if any(r.get("lcm_corrected") is not None for r in run["rounds"])]


def markdown_table(runs: dict[str, dict[str, Any]]) -> str:
    """Per-round Data/Model mIoU of each method, like the paper's Table 1."""
    n = max(len(r["rounds"]) for r in runs.values())
    head = "| method | metric | " + " | ".join("Init." if k == 0 else f"{k}R" for k in range(n)) + " |"
    lines = [head, "|" + " --- |" * (n + 2)]
    for key, label, name, run in table_rows(runs):
        vals = [r.get(key) for r in run["rounds"]] + [None] * (n - len(run["rounds"]))
        cells = ["—" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v)) for v in vals]
        lines.append(f"| {method_label(name)} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_class_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Per-class Data IoU before the first round and after the last one, per method (Markdown lines)."""
    have = {name: run["data_iou_per_class"] for name, run in runs.items()
            if run.get("data_iou_per_class", {}).get("last")}
    if not have:
        return []
    first = next(iter(have.values()))
    label = method_label
    fmt = lambda v: "—" if v is None else f"{v:.1f}"  # noqa: E731
    n_last = max(len(runs[name]["rounds"]) - 1 for name in have)
    lines = ["## Data IoU per class (%)", "",
             "| class | Init. | " + " | ".join(f"{label(n)} {n_last}R" for n in have) + " |",
             "| --- | --- |" + " --- |" * len(have)]
    for c in first["last"]:
        lines.append(f"| {c} | {fmt((first.get('init') or {}).get(c))} | "
                     + " | ".join(fmt(pc["last"].get(c)) for pc in have.values()) + " |")
    return lines + [""]


def write_report(out_dir: Path, runs: dict[str, dict[str, Any]], *, title: str = "a2lc report", notes: str = "") -> Path:
    """``report.md`` with the table, LCM accuracy, and the two plots, under ``out_dir``."""
    out_dir = Path(out_dir)
    plot_miou(runs, out_dir / "miou.png")
    plot_queried_classes(runs, out_dir / "queried_classes.png")
    parts = [f"# {title}", "", notes, "", "## mIoU per round (%)", "", markdown_table(runs), "",
             "![mIoU per round](miou.png)", "", "## Class of the queried masks", "",
             "![queried classes](queried_classes.png)", ""]
    lcm_rows = [(name, r) for name, run in runs.items() for r in run["rounds"] if r.get("lcm_corrected") is not None]
    if lcm_rows:
        parts += ["## Label correction module (paper Table 3)", ""]
        parts += [f"- {method_label(name)}: {lcm_line(run['lcm'])}" for name, run in runs.items() if run.get("lcm")]
        parts += ["", "| method | round | selection | masks corrected | estimated precision ≥ (bound) | "
                  "accuracy before (%) | accuracy after (%) |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in lcm_rows:
            fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
            bound = r.get("lcm_precision_bound")
            parts.append(f"| {method_label(name)} | {r['round']} | {r.get('lcm_selection', 'paper')} | {r['lcm_corrected']} | "
                         f"{'—' if bound is None else f'{100 * bound:.1f}%'} | "
                         f"{fmt(r['lcm_accuracy_before'])} | {fmt(r['lcm_accuracy_after'])} |")
        parts.append("")
    parts += per_class_table(runs)
    path = out_dir / "report.md"
    write_text_atomic(path, "\n".join(parts))
    return path


def find_runs(root: Path) -> dict[str, Workspace]:
    """The workspaces under ``root``: itself if it holds a dataset, else its subfolders that do."""
    root = Path(root)
    if Workspace(root).dataset_path.exists():
        return {root.name: Workspace(root)}
    runs = {p.name: Workspace(p) for p in sorted(root.iterdir()) if Workspace(p).dataset_path.exists()} if root.is_dir() else {}
    if not runs:
        raise A2LCError(f"no workspace (dataset.h5) in {root} or its subfolders")
    return runs
