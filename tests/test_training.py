"""Training θ_r and Model mIoU on a tiny learnable fixture in the real folder-source format."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from a2lc_cli.config import parse_config, set_option
from a2lc_cli.data import open_source
from a2lc_cli.data.base import VOID
from a2lc_cli.errors import A2LCError
from a2lc_cli.models import build_model
from a2lc_cli.state import Dataset
from a2lc_cli.training import (
    augment,
    batch_indices,
    evaluate_model_miou,
    load_model,
    predict_logits,
    resolve_recipe,
    save_model,
    segmentation_loss,
    train_round,
)
from train_fixture import COLOURS, write_tile_dataset

FAST = {"iterations": 40, "batch_size": 8, "crop": 24}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace whose θ_0 was trained by the CLI (``a2lc train --r 0``)."""
    from a2lc_cli.cli import invoke

    ws, cfg = write_tile_dataset(tmp_path_factory.mktemp("train"))
    code = invoke(["-q", "-w", str(ws.root), "train", "--r", "0", "--iterations", "40", "--batch-size", "8",
                   "--crop", "24", "--device", "cpu", "--json"])
    assert code == 0
    return ws, cfg


# --------------------------------------------------------------------------- loss
def test_void_pixels_never_contribute_to_loss_or_gradient():
    torch.manual_seed(0)
    target = torch.randint(0, 4, (2, 6, 7))
    target[0, :3] = VOID
    target[1, :, 5:] = VOID
    void = (target == VOID).unsqueeze(1).expand(-1, 4, -1, -1)
    base = torch.randn(2, 4, 6, 7)
    a = base.clone().requires_grad_(True)
    b = torch.where(void, base + 50 * torch.randn_like(base), base).requires_grad_(True)
    la, lb = segmentation_loss(a, target), segmentation_loss(b, target)
    la.backward()
    lb.backward()
    assert torch.allclose(la, lb)
    assert torch.allclose(a.grad, b.grad)
    assert a.grad[void].abs().max() == 0
    # the value is the mean cross-entropy over the valid pixels only
    logp = torch.log_softmax(base, 1)
    valid = target != VOID
    manual = -logp.permute(0, 2, 3, 1)[valid].gather(1, target[valid].unsqueeze(1)).mean()
    assert torch.allclose(la, manual)


def test_all_void_batch_gives_zero_loss_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((1, 4, 4), VOID))
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(logits.grad).all()


# --------------------------------------------------------------------------- data
def test_batches_are_epoch_permutations_and_deterministic():
    b = [batch_indices(10, 4, 3, 1, it) for it in range(5)]  # 20 samples = 2 epochs
    stream = np.concatenate(b)
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert np.array_equal(batch_indices(10, 4, 3, 1, 2), b[2])
    assert not np.array_equal(batch_indices(10, 4, 4, 1, 0), b[0])  # the seed matters


def test_augment_keeps_image_and_label_aligned_and_pads_with_void():
    rng = np.random.default_rng(0)
    label = np.kron(rng.integers(0, 3, (3, 4)), np.ones((4, 4), np.int64)).astype(np.uint8)  # 12×16
    image = COLOURS[label].astype(np.uint8)
    rec = replace(resolve_recipe(parse_config({})), crop=20, scale_min=0.5, scale_max=2.0, flip=True, jitter=0.0)
    for k in range(20):
        im, lab = augment(image, label, np.random.default_rng(k), crop_hw=(20, 20), recipe=rec)
        assert im.shape == (20, 20, 3) and lab.shape == (20, 20)
        valid = lab != VOID
        # every valid pixel keeps the colour of its class (nearest labels, bilinear only blurs borders)
        inner = valid.copy()
        assert np.isin(lab[valid], [0, 1, 2]).all()
        match = (np.abs(im[inner].astype(int) - COLOURS[lab[inner]]).sum(1) == 0).mean()
        assert match > 0.6
        if (~valid).any():  # padding: the mean colour
            assert np.abs(im[~valid].astype(int) - [124, 116, 104]).max() <= 1 or match < 1
        # colour jitter changes the colours, never the geometry
        im2, lab2 = augment(image, label, np.random.default_rng(k), crop_hw=(20, 20), recipe=replace(rec, jitter=0.4))
        assert np.array_equal(lab2, lab) and not np.array_equal(im2, im)


def test_recipes_are_the_papers_and_config_overrides_win(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # a user's OMP_NUM_THREADS would win over the recipe
    cs = resolve_recipe(parse_config({"source": {"kind": "cityscapes", "root": "/x"},
                                      "train": {"model": "deeplabv3plus_r101"}}))
    assert (cs.optimizer, cs.lr, cs.batch_size, cs.crop, cs.iterations) == ("sgd", 0.05, 8, 768, 30000)
    assert (cs.momentum, cs.weight_decay, cs.backbone_lr_mult, cs.poly_power) == (0.9, 1e-4, 0.1, 0.9)
    voc = resolve_recipe(parse_config({"source": {"kind": "voc", "root": "/x"}, "train": {"model": "deeplabv3plus_r50"}}))
    assert (voc.lr, voc.batch_size, voc.crop, voc.scale_min, voc.scale_max) == (0.1, 16, 513, 0.5, 2.0)
    tiny = resolve_recipe(parse_config({"train": {"lr": 0.003, "iterations": 7, "flip": False}}))
    assert (tiny.lr, tiny.iterations, tiny.flip) == (0.003, 7, False)
    assert resolve_recipe(parse_config({})).threads == 1  # the tiny recipe: one CPU thread
    assert resolve_recipe(parse_config({"train": {"threads": 2}})).threads == 2
    assert cs.threads is None
    with pytest.raises(A2LCError, match="scale_max"):
        resolve_recipe(parse_config({"train": {"scale_min": 2.0, "scale_max": 1.0}}))


# --------------------------------------------------------------------------- training
def test_train_lowers_the_loss_and_beats_chance(trained):
    ws, cfg = trained
    summary = json.loads(ws.artifact(0, "train.json").read_text())
    log = summary["log"]
    assert log[0]["loss"] > 2 * log[-1]["loss"]
    assert summary["iterations"] == 40 and summary["world_size"] == 1
    res = evaluate_model_miou(ws, None, device="cpu", progress=False)  # default: latest round with a model
    assert res["round"] == 0 and res["checkpoint"] == "last" and res["stale"] is False
    assert res["miou"] > 80  # chance (uniform guessing over 3 classes) is ≈ 33
    assert set(res["per_class"]) == {"red", "green", "blue"}
    assert not ws.artifact(0, "model.ckpt").exists()


def test_saved_model_records_its_inputs(trained):
    ws, _ = trained
    model, info = load_model(ws.artifact(0, "model.pt"), "cpu")
    with Dataset(ws.dataset_path) as ds:
        assert info["inputs"] == {"dataset": ds.uid, "query": None, "lcm": None}
    assert info["model"] == "tiny" and info["num_classes"] == 3
    assert info["class_names"] == ["red", "green", "blue"]
    assert info["config"]["train"]["iterations"] == 40 and info["recipe"]["crop"] == 24
    assert not model.training
    src = open_source(info_cfg := parse_config(info["config"]))
    img = np.stack([src.image("val", 0), src.image("val", 1)])
    logits = predict_logits(model, img, "cpu")
    assert logits.shape == (2, 3, 32, 48) and logits.dtype == torch.float32
    gt = src.label("val", 0)
    assert (logits[0].argmax(0).numpy() == gt)[gt != VOID].mean() > 0.9
    assert info_cfg.train.model == "tiny"


def test_cli_evaluate_model_miou(trained, cli):
    ws, _ = trained
    code, out, err = cli("-w", ws.root, "evaluate", "--metric", "model-miou", "--r", "0", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["metric"] == "model-miou" and res["miou"] > 80 and res["checkpoint"] == "last"
    assert ws.artifact(0, "metrics-model-miou.json").exists()
    code, out, _ = cli("-w", ws.root, "evaluate", "--metric", "model-miou")
    assert code == 0 and "IoU" in out and "blue" in out


def test_model_miou_known_by_construction(tmp_path):
    """A model whose classifier always says 'green': IoU_green = N_green / N_valid, the others 0."""
    ws, cfg = write_tile_dataset(tmp_path, n_train=2, n_val=4)
    model = build_model("tiny", 3)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))
    save_model(ws.artifact(0, "model.pt"), model, model_name="tiny", class_names=["red", "green", "blue"], round=0)
    src = open_source(cfg)
    gts = np.concatenate([src.label("val", i).ravel() for i in range(4)])
    valid = gts[gts != VOID]
    res = evaluate_model_miou(ws, 0, device="cpu", progress=False)
    expect_green = 100 * (valid == 1).sum() / valid.size
    assert res["per_class"]["green"] == pytest.approx(expect_green, abs=1e-3)
    assert res["per_class"]["red"] == 0 and res["per_class"]["blue"] == 0
    assert res["miou"] == pytest.approx(expect_green / 3, abs=1e-3)
    assert res["pixel_accuracy"] == pytest.approx(expect_green, abs=1e-3)
    # saved without recorded inputs (as by another tool): `a2lc status` trusts such a model (train's
    # trust_unrecorded), and evaluate's flag is the same verdict (a2lc_cli.stages.is_current)
    from a2lc_cli.rounds import DONE, stage_state
    from a2lc_cli.stages import TRAIN

    assert res["stale"] is False and stage_state(ws, ws.config(), 0, TRAIN) == DONE


def test_load_model_errors(tmp_path):
    with pytest.raises(A2LCError, match="does not exist"):
        load_model(tmp_path / "model.pt", "cpu")
    model = build_model("tiny", 3)
    good = tmp_path / "good.pt"
    save_model(good, model, model_name="tiny", class_names=["a", "b", "c"])
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(A2LCError, match="cut.pt: not a readable model"):
        load_model(tmp_path / "cut.pt", "cpu")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(A2LCError, match="not an a2lc model file"):
        load_model(tmp_path / "foreign.pt", "cpu")
    obj = torch.load(good, weights_only=True)
    obj["num_classes"] = 5
    torch.save(obj, tmp_path / "mismatch.pt")
    with pytest.raises(A2LCError, match="do not fit model 'tiny'"):
        load_model(tmp_path / "mismatch.pt", "cpu")
    m, info = load_model(good, "cpu")
    assert info["class_names"] == ["a", "b", "c"]


def test_train_needs_the_rounds_answers(trained):
    ws, cfg = trained
    with pytest.raises(A2LCError, match="round 2 has no answers yet"):
        train_round(ws, cfg, 2, device="cpu", progress=False)


def test_resume_continues_from_the_checkpoint_to_the_same_model(tmp_path):
    ws, cfg = write_tile_dataset(tmp_path, n_train=6, n_val=2)
    for k, v in {"iterations": 12, "batch_size": 4, "crop": 16, "checkpoint_every": 4}.items():
        cfg = set_option(cfg, f"train.{k}", str(v))
    full = train_round(ws, cfg, 0, device="cpu", progress=False)
    ref = torch.load(ws.artifact(0, "model.pt"), weights_only=True)["state_dict"]
    stopped = train_round(ws, cfg, 0, device="cpu", progress=False, stop_at=8)
    assert stopped["stopped_at"] == 8 and ws.artifact(0, "model.ckpt").exists()
    ws.artifact(0, "model.pt").unlink()
    resumed = train_round(ws, cfg, 0, device="cpu", progress=False, resume=True)
    assert resumed["resumed_from"] == 8 and not ws.artifact(0, "model.ckpt").exists()
    got = torch.load(ws.artifact(0, "model.pt"), weights_only=True)["state_dict"]
    for k in ref:
        assert torch.allclose(ref[k].float(), got[k].float(), atol=1e-5), k
    assert [e["iteration"] for e in resumed["log"]] == [e["iteration"] for e in full["log"]]
    # a checkpoint from another recipe is refused
    train_round(ws, cfg, 0, device="cpu", progress=False, stop_at=4)
    other = set_option(cfg, "train.lr", "0.5")
    with pytest.raises(A2LCError, match="different recipe"):
        train_round(ws, other, 0, device="cpu", progress=False, resume=True)


def test_resume_asks_the_one_staleness_check(tmp_path):
    """train --resume accepts a checkpoint whose recorded inputs are current by a2lc_cli.stages.is_current (as
    `a2lc status` would say), not by dict equality: a key absent now and never recorded is no difference;
    a recorded uid that differs now is refused."""
    ws, cfg = write_tile_dataset(tmp_path, n_train=6, n_val=2)
    for k, v in {"iterations": 8, "batch_size": 4, "crop": 16, "checkpoint_every": 4}.items():
        cfg = set_option(cfg, f"train.{k}", str(v))
    ckpt = ws.artifact(0, "model.ckpt")

    def stop_with_inputs(edit):
        train_round(ws, cfg, 0, device="cpu", progress=False, stop_at=4)
        obj = torch.load(ckpt, weights_only=False)
        obj["inputs"] = edit(obj["inputs"])
        torch.save(obj, ckpt)

    stop_with_inputs(lambda rec: {k: v for k, v in rec.items() if v is not None})  # round 0: no query, no lcm
    assert train_round(ws, cfg, 0, device="cpu", progress=False, resume=True)["resumed_from"] == 4
    stop_with_inputs(lambda rec: {**rec, "dataset": "another dataset"})
    with pytest.raises(A2LCError, match="different inputs"):
        train_round(ws, cfg, 0, device="cpu", progress=False, resume=True)


def test_cli_train_errors_are_one_line(tmp_path, cli):
    (tmp_path / "empty").mkdir()  # an empty folder is not a workspace yet: the hint says how to start one
    code, out, err = cli("-w", tmp_path / "empty", "train", "--r", "0")
    assert code == 2 and "is an empty folder" in err and "pseudolabel`" in err and "Traceback" not in err
    code, _, err = cli("-w", tmp_path / "empty", "train", "--model", "resnet9")
    assert code == 2 and "unknown --model 'resnet9' (choose from tiny, " in err


def test_streaming_path_with_workers_trains_the_same_model(tmp_path, monkeypatch):
    """Large train sets are read per sample in DataLoader workers; the batches are the same as preloaded."""
    from a2lc_cli import training

    ws, cfg = write_tile_dataset(tmp_path, n_train=6, n_val=2, train={"iterations": 5, "batch_size": 4, "crop": 16})
    first = train_round(ws, cfg, 0, device="cpu", progress=False)
    ref = torch.load(ws.artifact(0, "model.pt"), weights_only=True)["state_dict"]
    monkeypatch.setattr(training, "PRELOAD_BYTES", 0)
    second = train_round(ws, set_option(cfg, "train.workers", "1"), 0, device="cpu", progress=False)
    got = torch.load(ws.artifact(0, "model.pt"), weights_only=True)["state_dict"]
    assert first["preloaded"] is True and second["preloaded"] is False
    for k in ref:
        assert torch.allclose(ref[k].float(), got[k].float(), atol=1e-6), k
