"""``a2lc evaluate``: the metrics registry. Each metric returns one JSON-able dict."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from . import ui
from .errors import A2LCError
from .metrics import Unlabeled, data_miou, result_json
from .round_state import mask_state
from .state import Dataset
from .workspace import Workspace, write_json_atomic

METRICS: dict[str, str] = {
    "data-miou": "a2lc_cli.evaluate:evaluate_data_miou",
    "model-miou": "a2lc_cli.training:evaluate_model_miou",
    "lcm-accuracy": "a2lc_cli.lcm_stage:evaluate_lcm_accuracy",
    "answer-time": "a2lc_cli.evaluate:evaluate_answer_time",
}


def latest_label_round(ws: Workspace) -> int:
    """The last round r ≥ 0 such that rounds 1..r all have a query (labels exist after it)."""
    r = 0
    while ws.path("query", r + 1).exists():
        r += 1
    return r


def evaluate_data_miou(ws: Workspace, r: int | None, *, unlabeled: Unlabeled = "ignore", **_: Any) -> dict:
    """Data mIoU (train-set labels after round r vs ground truth), per class, coverage."""
    with Dataset(ws.dataset_path) as ds:
        if not ds.has_gt:
            raise A2LCError("data mIoU needs ground truth, and this dataset has none")
        if r is None:
            r = latest_label_round(ws)
        st = mask_state(ws, ds, r)
        applied = [k for k, s in st.rounds_applied if s == "query"]
        if r > 0 and (not applied or applied[-1] != r):
            raise A2LCError(f"round {r} has no answers yet; run `a2lc query --r {r}` first")
        res = data_miou(ds, st, unlabeled=unlabeled, progress=ui.progress)
        return result_json(
            "data-miou", r, res, ds.classes.names, unlabeled=unlabeled,
            stages=[f"{k}:{s}" for k, s in st.rounds_applied],
        )


def run_metric(ws: Workspace, metric: str, r: int | None, **options: Any) -> dict:
    """Compute a metric, save it as ``rounds/rNNN/metrics-<metric>.json`` and return it."""
    if metric not in METRICS:
        raise A2LCError(f"unknown metric {metric!r} (choose from {', '.join(METRICS)})")
    module, _, fn = METRICS[metric].partition(":")
    func: Callable[..., dict] = getattr(importlib.import_module(module), fn)
    result = func(ws, r, **options)
    if result.get("round") is not None and not options.get("no_save"):
        try:
            write_json_atomic(ws.artifact(int(result["round"]), f"metrics-{metric}.json"), result)
        except A2LCError as e:  # a read-only or full workspace: the metric is still the answer
            result["not_saved"] = str(e)
    return result


def evaluate_answer_time(ws: Any, r: int | None, **_: Any) -> dict[str, Any]:
    """``a2lc evaluate --metric answer-time``: seconds per answer in round r's answer log
    (default: the latest round with a ``query.h5``), per annotator and overall."""
    from .annotator import summarize_answer_times
    from .state import read_query

    if r is None:
        r = ws.latest_round("query")
        if r is None:
            raise A2LCError("no round has a query yet; run `a2lc query --r R` first")
    path = ws.path("query", r)
    if not path.exists():
        raise A2LCError(f"round {r} has no query yet ({path} does not exist)")
    res = summarize_answer_times(read_query(path).answers)
    return {"metric": "answer-time", "round": r, **res}
