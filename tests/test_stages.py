"""The stage registry (a2lc_cli.stages): order, prerequisites and the one staleness check, derived from
the declarations; a stage run with its dependencies passed as arguments (no monkeypatching)."""

from __future__ import annotations

import numpy as np
import pytest

from a2lc_cli.acquire import read_acquisition, run_acquire
from a2lc_cli.config import Config
from a2lc_cli.query import run_query
from a2lc_cli.rounds import DONE, MISSING, STALE, stage_state
from a2lc_cli.stages import (ACQUIRE, LCM_CORRECT, LCM_TRAIN, PSEUDOLABEL, QUERY, STAGES, TRAIN, current_inputs,
                             inputs_match, is_current, next_step, required_before, stages_of_round)
from a2lc_cli.state import read_query, write_query
from a2lc_cli.store import artifact_uid

from support import LookupModel, fakes, touch_model, write_workspace


def _cfg(method: str) -> Config:
    cfg = Config()
    cfg.method.preset = method
    return cfg


def test_rounds_run_the_declared_stages_in_order():
    names = lambda r, m: [s.name for s in stages_of_round(r, _cfg(m))]  # noqa: E731
    assert names(0, "a2lc") == ["pseudolabel", "train"]
    assert names(1, "a2lc") == ["acquire", "query", "lcm-train", "lcm-correct", "train"]
    assert names(3, "alc") == ["acquire", "query", "train"]  # ALC declares no LCM (enabled is false)
    assert [s.name for s in STAGES] == ["pseudolabel", "acquire", "query", "lcm-train", "lcm-correct", "train"]


def test_prerequisites_follow_the_required_inputs_transitively():
    cfg = _cfg("a2lc")
    assert required_before(ACQUIRE, 1, cfg) == []  # dataset and θ_{r-1} are outside the round
    assert required_before(QUERY, 1, cfg) == [ACQUIRE]
    assert required_before(LCM_CORRECT, 1, cfg) == [ACQUIRE, QUERY, LCM_TRAIN]
    assert required_before(TRAIN, 2, cfg) == [ACQUIRE, QUERY]  # lcm.h5 is an optional input of train
    assert required_before(TRAIN, 0, cfg) == []  # round 0 has no query stage


def test_inputs_match_by_hand():
    assert inputs_match({"a": "1", "b": "2"}, {"b": "2", "a": "1"})
    assert not inputs_match({"a": "1"}, {"a": "2"})
    assert inputs_match({"a": "1"}, {"a": "1", "lcm": None})  # absent now and never recorded: no difference
    assert not inputs_match({"a": "1", "lcm": "x"}, {"a": "1", "lcm": None})  # recorded, gone now
    assert not inputs_match({"a": "1", "r1/query.h5": "q"}, {"a": "1"})  # recorded an input that is left out now
    assert not inputs_match({}, {"a": "1"})


@pytest.fixture
def ws_with_fakes(tmp_path):
    """A 2-image workspace, its in-memory source and a model with fixed softmax (passed as arguments)."""
    seg = np.full((4, 4), -1, np.int32)
    seg[:2] = 0
    seg[2:] = 1
    lab = np.zeros((4, 4), np.uint8)
    lab[2:] = 1
    gt = lab.copy()
    gt[2:] = 2
    probs = np.zeros((3, 4, 4))
    probs[:] = np.array([0.6, 0.3, 0.1])[:, None, None]
    ws, source = write_workspace(tmp_path / "ws", num_classes=3, segments=[seg, seg], labels0=[lab, lab], gts=[gt, gt])
    touch_model(ws, 0)
    return ws, source, LookupModel([probs, probs])


def test_acquire_takes_its_model_and_source_as_arguments_and_query_records_its_declared_inputs(ws_with_fakes):
    ws, source, model = ws_with_fakes
    cfg = ws.config()
    cfg.method.budget = 2
    assert stage_state(ws, cfg, 1, ACQUIRE) == MISSING
    assert next_step(ws, cfg, max_round=1) == (1, ACQUIRE)  # dataset and θ_0 exist: round 1's acquisition is next
    run_acquire(ws, cfg, 1, device="cpu", model=model, source=source)
    acq = read_acquisition(ws.path(ACQUIRE, 1))
    assert acq.score.shape == (4,) and acq.attrs["inputs"] == current_inputs(ws, ACQUIRE, 1)
    assert set(acq.attrs["inputs"]) == {"dataset", "model"}
    assert stage_state(ws, cfg, 1, ACQUIRE) == DONE

    run_query(ws, cfg, 1)
    q = read_query(ws.path(QUERY, 1))
    assert q.attrs["inputs"] == {"acquire": acq.attrs["uid"], "dataset": artifact_uid(ws.path(PSEUDOLABEL))}
    assert stage_state(ws, cfg, 1, QUERY) == DONE
    assert is_current(ws, QUERY, 1, q.attrs["inputs"])

    # query.h5 records {acquire, dataset}: a dataset uid that differs is stale, not only an acquire uid
    write_query(ws.path(QUERY, 1), q, inputs={**q.attrs["inputs"], "dataset": "another dataset"}, meta={})
    assert stage_state(ws, cfg, 1, QUERY) == STALE
    write_query(ws.path(QUERY, 1), q, inputs={**q.attrs["inputs"], "acquire": "another acquisition"}, meta={})
    assert stage_state(ws, cfg, 1, QUERY) == STALE


def test_workspace_paths_by_stage_and_latest_round(ws_with_fakes):
    ws, _, _ = ws_with_fakes
    assert ws.path("pseudolabel") == ws.dataset_path
    assert ws.path(QUERY, 2) == ws.root / "rounds" / "r002" / "query.h5"
    assert ws.latest_round("train") == 0
    assert ws.latest_round("query") is None


def test_query_takes_its_image_source_as_an_argument_for_the_bundle(ws_with_fakes, tmp_path):
    ws, source, model = ws_with_fakes
    cfg = ws.config()
    cfg.method.budget = 2
    cfg.method.annotator = "human"
    run_acquire(ws, cfg, 1, device="cpu", model=model, source=source)
    res = run_query(ws, cfg, 1, export_dir=tmp_path / "bundle", source=source)  # no monkeypatching
    q = read_query(ws.path(QUERY, 1))
    assert res["selected"] == 2 and len(q.answers.mask) == 0  # people answer later
    assert len(list((tmp_path / "bundle" / "masks").glob("*_crop.png"))) == 2
    assert (tmp_path / "bundle" / "answers.csv").read_text().count("\n") == 3  # header + 2 masks


def test_whole_rounds_run_on_fakes_passed_as_arguments(ws_with_fakes, cli):
    """`a2lc run` gives every stage and the evaluation the StageInputs it was passed (cli.invoke's ``inputs``):
    the in-memory images and the fixed-softmax θ_0, no monkeypatching; the rest of the round (simulated
    answers, ψ, training a real θ_1 on the fake images) runs for real."""
    import json

    from a2lc_cli.training import load_model

    ws, source, model = ws_with_fakes
    cfg = ws.config()
    cfg.method.budget = 2
    cfg.train.iterations = 2
    ws.save_config(cfg)
    code, out, err = cli("-q", "-w", ws.root, "run", "--rounds", "1", "--json", "--device", "cpu",
                         inputs=fakes(source, model))
    assert code == 0, err
    r0, r1 = json.loads(out)["rounds"]
    assert r0["stages"] == {"pseudolabel": "skipped", "train": "skipped"}  # dataset.h5 and θ_0 are in place
    assert r1["stages"] == {s: "ran" for s in ("acquire", "query", "lcm-train", "lcm-correct", "train")}
    assert all(stage_state(ws, cfg, 1, s) == DONE for s in stages_of_round(1, cfg))
    acq = read_acquisition(ws.path(ACQUIRE, 1))
    assert np.allclose(acq.mean_prob, [0.6, 0.3, 0.1], atol=1e-5)  # scored by the fake θ_0, not a file
    assert len(read_query(ws.path(QUERY, 1)).answers.mask) == 2
    assert r1["metrics"]["data_miou"] is not None and "model_miou" not in r1["metrics"]  # the fake source has no val split
    assert load_model(ws.path(TRAIN, 1), "cpu")[1]["round"] == 1  # θ_1: a real model trained on the fake images


def test_lcm_correct_takes_psi_as_an_argument(ws_with_fakes):
    """lcm-correct asks its StageInputs for ψ_r: a fake ψ that always says class 2 with logits (0, 0, 10) decides
    every eligible mask's prediction and log-confidence in lcm.h5."""
    import dataclasses

    import h5py
    import torch

    from a2lc_cli.lcm_stage import load_lcm, run_lcm_correct, run_lcm_train

    ws, source, model = ws_with_fakes
    cfg = ws.config()
    cfg.method.budget = 2
    inputs = fakes(source, model)
    run_acquire(ws, cfg, 1, device="cpu", inputs=inputs)
    run_query(ws, cfg, 1)
    run_lcm_train(ws, cfg, 1)
    _, ckpt = load_lcm(ws.path(LCM_TRAIN, 1))  # the real checkpoint's header: lcm-correct checks it is current

    class Always2(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([0.0, 0.0, 10.0]).expand(len(x), 3)

    queried = read_query(ws.path(QUERY, 1)).selected
    answers = read_query(ws.path(QUERY, 1)).answers.effective()[1]
    if len(set(answers.tolist()) - {255}) < 2:  # answers of one class: lcm-train recorded that ψ has nothing to learn
        assert "one class" in ckpt["skipped"]
        run_lcm_correct(ws, cfg, 1, inputs=dataclasses.replace(inputs, lcm=lambda path: (Always2(), ckpt)))
        with h5py.File(ws.path(LCM_CORRECT, 1), "r") as f:  # then no ψ is applied, even a given one
            assert (f["pred"][:] == 255).all() and f["corrected/mask"].shape == (0,)
        ckpt = {k: v for k, v in ckpt.items() if k != "skipped"}  # the header of a ψ that was trained
    run_lcm_correct(ws, cfg, 1, inputs=dataclasses.replace(inputs, lcm=lambda path: (Always2(), ckpt)))
    with h5py.File(ws.path(LCM_CORRECT, 1), "r") as f:
        pred, logc = f["pred"][:], f["log_confidence"][:]
    eligible = np.ones(4, bool)
    eligible[queried] = False
    assert pred[eligible].tolist() == [2, 2] and (pred[~eligible] == 255).all()
    assert np.allclose(logc, -np.log1p(2 * np.exp(-10.0)))  # log softmax of (0, 0, 10) at class 2, by hand


def test_a_wrong_choice_is_one_line_naming_the_choices(ws_with_fakes, cli):
    ws, _, _ = ws_with_fakes
    code, _, err = cli("-w", ws.root, "query", "--r", "1", "--unit", "px")
    assert code == 2
    assert err.strip() == "error: unknown --unit 'px' (choose from mask, pixel) (see `a2lc query --help`)"


def test_a_wrong_choice_of_an_option_with_two_names_names_the_long_one(ws_with_fakes, cli):
    ws, _, _ = ws_with_fakes
    code, _, err = cli("-w", ws.root, "evaluate", "-m", "nope")
    assert code == 2
    assert err.strip().startswith("error: unknown --metric 'nope' (choose from data-miou, model-miou, lcm-accuracy")


@pytest.mark.parametrize("args, want", [
    (("init", "--source", "nope"), "unknown --source 'nope' (choose from synthetic, cityscapes, voc, folder)"),
    (("init", "--preset", "nope"), "unknown --preset 'nope' (choose from city, voc)"),
    (("init", "--labeler", "nope"), "unknown --labeler 'nope' (choose from simulate, import, grounded-sam)"),
    (("init", "--method", "nope"), "unknown --method 'nope' (choose from a2lc, alc, a2lc+)"),
    (("pseudolabel", "--labeler", "nope"), "unknown --labeler 'nope' (choose from simulate, import, grounded-sam)"),
    (("pseudolabel", "--precision", "fp16"), "unknown --precision 'fp16' (choose from auto, bf16, fp32)"),
    (("train", "--model", "resnet9"), "unknown --model 'resnet9' (choose from " + ", ".join(__import__(
        "a2lc_cli.model_variants", fromlist=["MODELS"]).MODELS) + ")"),
])
def test_every_option_with_choices_words_a_wrong_value_alike(tmp_path, cli, args, want):
    code, _, err = cli("-w", tmp_path / "ws", *args)
    assert code == 2
    assert err.strip() == f"error: {want} (see `a2lc {args[0]} --help`)"
    assert not (tmp_path / "ws").exists()  # refused before anything is written


def test_evaluate_checks_its_round_like_the_stage_commands(ws_with_fakes, cli):
    ws, _, _ = ws_with_fakes  # θ_0 exists, round 1 has not started: the hint of `a2lc query --r 1`
    code, _, err = cli("-w", ws.root, "evaluate", "--r", "1")
    # the hint names the workspace (-w), so that it works when copied (a2lc_cli/hints.py)
    assert code == 2 and err.strip() == f"error: round 1 has no acquire.h5 yet; run `a2lc -w {ws.root} acquire --r 1` first"
    code, _, err = cli("-w", ws.root, "evaluate", "--r", "2")  # no θ_1: the words of `a2lc round`
    assert code == 2 and "round 2 needs round 1 first" in err


# --------------------------------------------------------------------------- docs/developing.md's worked example
def _run_denoise(ws, cfg, r, **_):
    """The worked example's run function: the round's labels, unchanged, in ``rNNN/denoise.h5``."""
    from a2lc_cli.dataset_file import Dataset
    from a2lc_cli.round_state import mask_state
    from a2lc_cli.stages import current_inputs, stage
    from a2lc_cli.store import write_artifact

    denoise = stage("denoise")
    with Dataset(ws.dataset_path) as ds:
        label = mask_state(ws, ds, r).label.copy()
    with write_artifact(ws.path(denoise, r), "denoise", inputs=current_inputs(ws, denoise, r), meta={}) as f:
        f.create_dataset("label", data=label)


def test_a_stage_declared_once_is_ordered_required_run_and_checked_for_staleness(ws_with_fakes, monkeypatch):
    """docs/developing.md: one module plus one declaration; order, prerequisites, staleness, `status` and
    `round`'s runner come from the declaration alone."""
    from a2lc_cli import stages
    from a2lc_cli.errors import A2LCError
    from a2lc_cli.rounds import call_runner, check_order
    from a2lc_cli.stages import Input, Stage
    from a2lc_cli.status import workspace_status

    denoise = Stage("denoise", "denoise.h5", "denoise", "a2lc denoise --r {r}", "test_stages:_run_denoise", inputs=(
        Input("query", "query"), Input("lcm", "lcm-correct", required=False), Input("dataset", "pseudolabel"),
    ))
    monkeypatch.setattr(stages, "STAGES", (PSEUDOLABEL, ACQUIRE, QUERY, LCM_TRAIN, LCM_CORRECT, denoise, TRAIN))
    monkeypatch.setitem(stages.BY_NAME, "denoise", denoise)
    ws, source, model = ws_with_fakes
    cfg = ws.config()
    cfg.method.budget = 2

    assert [s.name for s in stages_of_round(1, cfg)] == ["acquire", "query", "lcm-train", "lcm-correct", "denoise", "train"]
    assert required_before(denoise, 1, cfg) == [ACQUIRE, QUERY]  # lcm.h5 is optional (no LCM under ALC)
    with pytest.raises(A2LCError, match=r"round 1 has no acquire\.h5 yet; run `a2lc acquire --r 1` first"):
        check_order(ws, cfg, 1, denoise)

    run_acquire(ws, cfg, 1, device="cpu", model=model, source=source)
    run_query(ws, cfg, 1)
    assert stage_state(ws, cfg, 1, denoise) == MISSING
    assert "denoise" in workspace_status(ws)["rounds"][1]["stages"]
    call_runner(denoise, ws, cfg, 1, device="cpu", force=False, state=MISSING)  # as `a2lc round` calls it
    assert stage_state(ws, cfg, 1, denoise) == DONE
    assert set(read_header_inputs(ws, denoise)) == {"query", "dataset", "lcm"}

    q = read_query(ws.path(QUERY, 1))
    write_query(ws.path(QUERY, 1), q, inputs=q.attrs["inputs"], meta={})  # a new query.h5 (new uid)
    assert stage_state(ws, cfg, 1, denoise) == STALE
    assert workspace_status(ws)["rounds"][1]["stages"]["denoise"] == STALE


def read_header_inputs(ws, stage):
    from a2lc_cli.store import read_header

    return read_header(ws.path(stage, 1), stage.kind)["inputs"]


def _denoise_stage(**kw):
    """The worked example's stage (docs/developing.md), declared here; ``kw`` overrides fields of the declaration."""
    from a2lc_cli.stages import Input, Stage

    return Stage("denoise", "denoise.h5", "denoise", "a2lc denoise --r {r}", "test_stages:_run_denoise", inputs=(
        Input("query", "query"), Input("lcm", "lcm-correct", required=False), Input("dataset", "pseudolabel"),
    ), **kw)


def _register(monkeypatch, extra, *, before):
    """Declare ``extra`` in the registry, in round order just before ``before`` (as docs/developing.md says)."""
    from a2lc_cli import stages

    order = list(stages.STAGES)
    order.insert(order.index(before), extra)
    monkeypatch.setattr(stages, "STAGES", tuple(order))
    monkeypatch.setitem(stages.BY_NAME, extra.name, extra)


def test_a_round_reruns_only_what_depends_on_a_rerun_stage(ws_with_fakes, monkeypatch):
    """`a2lc round` reruns a stage only when its recorded inputs differ from its declared inputs' uids now: a
    rerun `denoise` that `train` does not depend on leaves θ_1 (and round 2's acquisition scored by θ_1)
    current; a rerun `query` makes everything that declares it (lcm-train, lcm-correct, denoise, train) rerun."""
    from a2lc_cli.rounds import run_round

    denoise = _denoise_stage()
    _register(monkeypatch, denoise, before=TRAIN)
    ws, source, model = ws_with_fakes
    cfg = ws.config()
    cfg.method.budget = 2
    cfg.train.iterations = 1
    ws.save_config(cfg)
    inputs = fakes(source, model)
    res = run_round(ws, cfg, 1, device="cpu", evaluate=False, inputs=inputs)
    assert set(res["stages"].values()) == {"ran"}
    run_acquire(ws, cfg, 2, device="cpu", inputs=inputs)  # round 2 starts on θ_1
    model_uid = artifact_uid(ws.path(TRAIN, 1))

    ws.path(denoise, 1).unlink()  # denoise missing: it alone reruns
    res = run_round(ws, cfg, 1, device="cpu", evaluate=False, inputs=inputs)
    assert res["stages"] == {"acquire": "skipped", "query": "skipped", "lcm-train": "skipped",
                             "lcm-correct": "skipped", "denoise": "ran", "train": "skipped"}
    assert artifact_uid(ws.path(TRAIN, 1)) == model_uid
    assert stage_state(ws, cfg, 2, ACQUIRE) == DONE  # round 2 stays current

    q = read_query(ws.path(QUERY, 1))
    write_query(ws.path(QUERY, 1), q, inputs=q.attrs["inputs"], meta={})  # a new query.h5 (new uid): its dependants rerun
    res = run_round(ws, cfg, 1, device="cpu", evaluate=False, inputs=inputs)
    assert res["stages"] == {"acquire": "skipped", "query": "skipped", "lcm-train": "ran",
                             "lcm-correct": "ran", "denoise": "ran", "train": "ran"}
    assert artifact_uid(ws.path(TRAIN, 1)) != model_uid
    assert stage_state(ws, cfg, 2, ACQUIRE) == STALE  # θ_1 changed under round 2


def test_evaluate_scores_what_exists_and_flags_staleness(ws_with_fakes, cli):
    """`a2lc evaluate --r 2` is read-only: a stale round 1 (θ_0 changed under its acquisition) is flagged in its
    output, not refused (as `evaluate` without --r, and before the registry); it refuses only a missing
    artifact, and a round the scored stage does not run in, in the shared round check's words."""
    import json

    from a2lc_cli.lcm_stage import run_lcm_correct, run_lcm_train

    ws, source, model = ws_with_fakes
    cfg = ws.config()
    cfg.method.budget = 1
    ws.save_config(cfg)
    inputs = fakes(source, model)
    run_acquire(ws, cfg, 1, device="cpu", inputs=inputs)
    run_query(ws, cfg, 1)
    touch_model(ws, 1)
    run_acquire(ws, cfg, 2, device="cpu", inputs=inputs)
    run_query(ws, cfg, 2)
    run_lcm_train(ws, cfg, 2)
    run_lcm_correct(ws, cfg, 2)
    import torch

    torch.save({"format": "a2lc-test-placeholder", "inputs": {}, "uid": "another θ_0"}, ws.path(TRAIN, 0))
    # θ_0 changed: round 1's acquisition is stale
    assert stage_state(ws, cfg, 1, ACQUIRE) == STALE

    for metric in ("data-miou", "lcm-accuracy"):
        code, out, err = cli("-w", ws.root, "evaluate", "--r", "2", "-m", metric, "--json")
        assert code == 0, err
        res = json.loads(out)
        assert res["round"] == 2 and "r1:acquire" in res["stale_stages"]
    code, out, err = cli("-w", ws.root, "evaluate", "--r", "2")
    assert code == 0 and "note: stale (r1:acquire" in err

    code, _, err = cli("-w", ws.root, "evaluate", "--r", "0", "-m", "lcm-accuracy")
    assert code == 2 and err.strip() == ("error: lcm-accuracy scores lcm-correct, which runs in rounds ≥ 1 "
                                         "(round 0 is the pseudo-labels and θ_0), not round 0")
    code, _, err = cli("-w", ws.root, "evaluate", "--r", "1", "-m", "lcm-accuracy")  # round 1 has no lcm.h5: what first
    assert code == 2 and err.strip() == f"error: round 1 has no lcm.pt yet; run `a2lc -w {ws.root} lcm-train --r 1` first"


def test_the_annotation_session_asks_the_one_staleness_check(ws_with_fakes):
    """The serve session refuses a query.h5 that `a2lc status` calls stale — by any of its declared inputs
    (the dataset as well as the acquisition), not only ``inputs["acquire"]``."""
    from a2lc_cli.errors import A2LCError
    from a2lc_cli.serve.session import AnnotationSession

    ws, source, model = ws_with_fakes
    cfg = ws.config()
    cfg.method.budget = 2
    cfg.method.annotator = "human"
    run_acquire(ws, cfg, 1, device="cpu", model=model, source=source)
    run_query(ws, cfg, 1)
    assert len(AnnotationSession(ws, 1).selected) == 2
    q = read_query(ws.path(QUERY, 1))
    write_query(ws.path(QUERY, 1), q, inputs={**q.attrs["inputs"], "dataset": "another dataset"}, meta=q.attrs["meta"])
    assert stage_state(ws, cfg, 1, QUERY) == STALE
    with pytest.raises(A2LCError, match="query.h5 is stale"):
        AnnotationSession(ws, 1)


def test_the_round_check_refuses_a_round_a_declared_stage_does_not_run_in():
    """The shared round check reads the rounds from the declaration: a newly declared stage (rounds ≥ 1 by
    default) is refused at --r 0 in the same words as acquire."""
    from a2lc_cli.commands._common import require_round
    from a2lc_cli.errors import A2LCError

    with pytest.raises(A2LCError) as e:
        require_round(0, "denoise", _denoise_stage())
    assert str(e.value) == "denoise runs in rounds ≥ 1 (round 0 is the pseudo-labels and θ_0), not round 0"
    with pytest.raises(A2LCError) as e2:
        require_round(0, "acquire", ACQUIRE)
    assert str(e2.value) == str(e.value).replace("denoise", "acquire")
    with pytest.raises(A2LCError, match=r"^denoise needs a round: --r R$"):
        require_round(None, "denoise", _denoise_stage())
    assert require_round(2, "denoise", _denoise_stage()) == 2 and require_round(0, "train", TRAIN) == 0


DENOISE_LAYOUT = {"label": ("u", (), None, True)}  # the worked example's schema, beside its run function


def test_a_declared_stage_brings_its_schema_and_status_checks_its_artifact(ws_with_fakes, monkeypatch):
    """The worked example's declaration names its schema (``layout=``): store.open_artifact checks every open
    against it, and `a2lc status` shows a damaged artifact of the new stage as damaged, naming it."""
    from a2lc_cli.status import workspace_status
    from a2lc_cli.store import layout_of, write_artifact

    denoise = _denoise_stage(layout="test_stages:DENOISE_LAYOUT")
    _register(monkeypatch, denoise, before=TRAIN)
    ws, source, model = ws_with_fakes
    cfg = ws.config()
    cfg.method.budget = 2
    assert layout_of("denoise") == DENOISE_LAYOUT and "score" in layout_of("acquire")
    run_acquire(ws, cfg, 1, device="cpu", model=model, source=source)
    run_query(ws, cfg, 1)
    _run_denoise(ws, cfg, 1)
    assert workspace_status(ws)["rounds"][1]["stages"]["denoise"] == DONE
    with write_artifact(ws.path(denoise, 1), "denoise", inputs=current_inputs(ws, denoise, 1)) as f:
        f.create_dataset("labels", data=np.zeros(4, np.uint8))  # not the declared "label"
    st = workspace_status(ws)
    assert st["rounds"][1]["stages"]["denoise"] == "damaged"
    assert st["rounds"][1]["error"] == f"{ws.path(denoise, 1)}: missing dataset 'label' (file damaged or from another tool)"
