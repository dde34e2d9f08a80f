"""Grounded SAM labeler: tiny randomly initialised GroundingDINO and SAM built from the libraries'
own modules, saved as checkpoint files and loaded through the user's code path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from a2lc_cli.config import Config
from a2lc_cli.data.base import ClassInfo, Source, default_palette
from a2lc_cli.errors import A2LCError
from a2lc_cli.labelers import make_labeler
from a2lc_cli.labelers.grounded_sam import GroundedSamLabeler, gdino_input_size
from a2lc_cli.labelers.grounded_sam.models import SAM_TYPES, build_gdino, build_sam, resolve_gdino_config, resolve_sam_spec
from a2lc_cli.labelers.grounded_sam.prompts import build_prompts, token_classes

H, W = 64, 96
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", "road", "street", "car", "sky", "traffic", "light",
         "background", "person", "##s"]
CITY = ClassInfo(("road", "car", "sky", "traffic light"), default_palette(4), fill_label=255, convention="cityscapes")
SAM_TINY = dict(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1],
                image_size=128, window_size=4, prompt_embed_dim=32, decoder_mlp_dim=64, decoder_num_heads=2,
                iou_head_hidden_dim=32)


def write_bert(folder: Path) -> Path:
    """A BERT folder as users bring it (config + vocabulary; weights come with the GroundingDINO checkpoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "bert", "vocab_size": len(VOCAB), "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 256, "type_vocab_size": 2,
    }))
    return folder


def write_gdino_config(path: Path, *, layers: int = 1) -> Path:
    """groundingdino-py's SwinT config with a small transformer (hidden size 256 is fixed by the library)."""
    base = resolve_gdino_config("SwinT").read_text()
    path.write_text(base + f"\nenc_layers = {layers}\ndec_layers = {layers}\ndim_feedforward = 64\nnum_queries = 12\n")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gsam")
    torch.manual_seed(0)
    spec = root / "sam_tiny.json"
    spec.write_text(json.dumps(SAM_TINY))
    sam = build_sam(resolve_sam_spec(str(spec)))
    torch.save(sam.state_dict(), root / "sam_tiny.pth")  # official SAM files are bare state dicts
    bert = write_bert(root / "bert")
    cfg = write_gdino_config(root / "gdino_tiny.py")
    gdino = build_gdino(cfg, bert)
    torch.save({"model": gdino.state_dict()}, root / "gdino_tiny.pth")  # official GroundingDINO layout
    return {"root": root, "sam": root / "sam_tiny.pth", "sam_type": spec, "gdino": root / "gdino_tiny.pth",
            "gdino_config": cfg, "bert": bert}


class ImagesSource(Source):
    """A few random train images held in memory (ground truth present but must not be used)."""

    def __init__(self, classes: ClassInfo = CITY, n: int = 3):
        self.classes = classes
        self.n = n

    def names(self, split: str) -> list[str]:
        return [f"img{i}" for i in range(self.n)] if split == "train" else []

    def image(self, split: str, index: int) -> np.ndarray:
        rng = np.random.default_rng(index)
        img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        img[: H // 2] //= 3  # some structure
        return img

    def size(self, split: str, index: int) -> tuple[int, int]:
        return H, W  # like file sources: from the header, without decoding

    def label(self, split: str, index: int) -> np.ndarray:
        return np.random.default_rng(100 + index).integers(0, self.classes.num_classes, (H, W)).astype(np.uint8)


def make_cfg(models: dict[str, Path], **overrides) -> Config:
    cfg = Config()
    gs = dict(sam_checkpoint=str(models["sam"]), sam_type=str(models["sam_type"]), gdino_checkpoint=str(models["gdino"]),
              gdino_config=str(models["gdino_config"]), text_encoder=str(models["bert"]), box_threshold=0.0,
              short_side=64, max_side=128, batch_size=2, device="cpu")
    gs.update(overrides)
    data = cfg.model_dump(mode="json")
    data["pseudolabel"]["grounded_sam"].update(gs)
    data["pseudolabel"]["labeler"] = "grounded-sam"
    return Config.model_validate(data)


def raw_masks(lab: GroundedSamLabeler, images: list[np.ndarray]):
    """The engine's boxes and unresolved (k,H,W) masks of a batch of images (one batch, as the labeler ran it)."""
    eng = lab._engine
    xs = [torch.from_numpy(im).permute(2, 0, 1).float() for im in images]
    dets = eng.detect(xs)
    return [(d, m.numpy()) for d, m in zip(dets, eng.segment(xs, dets))]


def assert_smaller_on_top(segment, label0, masks, labels, fill):
    """Every covered pixel belongs to a mask covering it, and no covering mask is smaller (ties: later wins)."""
    k = len(masks)
    areas = masks.reshape(k, -1).sum(1)
    covered = masks.any(0) if k else np.zeros(segment.shape, bool)
    np.testing.assert_array_equal(segment >= 0, covered)
    ys, xs = np.nonzero(covered)
    win = segment[ys, xs]
    assert masks[win, ys, xs].all()
    cover = masks[:, ys, xs]  # (k,P)
    idx = np.arange(k)[:, None]
    beats = (areas[:, None] < areas[win][None]) | ((areas[:, None] == areas[win][None]) & (idx > win[None]))
    assert not (cover & beats).any()
    np.testing.assert_array_equal(label0[covered], np.asarray(labels)[segment[covered]])
    assert (label0[~covered] == fill).all()


# ---------------------------------------------------------------------------------------------- units
def test_official_sam_specs_match_segment_anything_registry():
    from segment_anything import sam_model_registry

    for name, spec in SAM_TYPES.items():
        with torch.device("meta"):
            ours = {k: tuple(v.shape) for k, v in build_sam(spec).state_dict().items()}
            theirs = {k: tuple(v.shape) for k, v in sam_model_registry[name]().state_dict().items()}
        assert ours == theirs, name


def test_gdino_input_size_rule():
    assert gdino_input_size(1024, 2048, 512, 1024) == (512, 1024)  # Cityscapes, the authors' setting
    assert gdino_input_size(375, 500, 800, 1333) == (800, 1066)  # VOC-size landscape
    assert gdino_input_size(500, 375, 800, 1333) == (1066, 800)  # portrait
    assert gdino_input_size(100, 1000, 800, 1333) == (133, 1330)  # long side capped: round(1333 * 100/1000) = 133


def test_prompts_synonyms_and_token_classes(models):
    from transformers import AutoTokenizer

    p = build_prompts(CITY, prompts={"Road": ["road", "Street"], "sky": []}, thresholds={"car": 0.5}, box_threshold=0.2)
    assert p.caption == "road . street . car . traffic light ."
    assert p.phrase_class == (0, 0, 1, 3)
    np.testing.assert_allclose(p.thresholds[[0, 1, 3]], [0.2, 0.5, 0.2])
    assert np.isnan(p.thresholds[2])  # sky is not prompted
    tok = AutoTokenizer.from_pretrained(str(models["bert"]))
    # [CLS] road . street . car . traffic light . [SEP]
    assert token_classes(p, tok).tolist() == [-1, 0, -1, 0, -1, 1, -1, 3, 3, -1, -1]


@pytest.mark.parametrize("prompts, thresholds, message", [
    ({"bus": ["bus"]}, {}, "unknown class 'bus'"),
    ({"car": ["car . truck"]}, {}, "contains '.'"),
    ({"car": ["road"]}, {}, "used for both 'road' and 'car'"),
    ({}, {"car": 1.5}, "not in [0, 1]"),
])
def test_prompt_errors(prompts, thresholds, message):
    with pytest.raises(A2LCError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        build_prompts(CITY, prompts=prompts, thresholds=thresholds, box_threshold=0.2)


@pytest.fixture(scope="module")
def labeler(models) -> GroundedSamLabeler:
    """A checked labeler on Cityscapes-like classes, 'road' prompted with two synonyms."""
    lab = make_labeler("grounded-sam", make_cfg(models, prompts={"road": ["road", "street"]}), ImagesSource())
    lab.check()
    return lab


def test_proposals_paint_smaller_masks_on_top_and_keep_scores(labeler):
    lab = labeler
    src = ImagesSource()
    images = [src.image("train", i) for i in range(3)]
    props = lab.propose_batch([0, 1, 2], images)
    total = 0
    for (d, masks), prop in zip(raw_masks(lab, images), props):
        labels = d.label.numpy()
        assert len(labels) > 0
        total += len(labels)
        assert_smaller_on_top(prop.segment, prop.label0, masks, labels, fill=255)
        np.testing.assert_array_equal(prop.prompt, labels.astype(np.int16))
        np.testing.assert_allclose(prop.score, d.score.numpy(), rtol=1e-6)
        assert (np.diff(prop.score) <= 0).all()  # detections in score order
    assert total > 3


def test_each_box_takes_the_class_of_its_best_token(labeler):
    """Independent re-derivation of the class rule from GroundingDINO's raw token scores."""
    from groundingdino.util.misc import nested_tensor_from_tensor_list

    eng = labeler._engine
    assert eng.prompts.caption.startswith("road . street . car")
    img = torch.from_numpy(ImagesSource().image("train", 1)).permute(2, 0, 1).float()
    det = eng.detect([img])[0]
    x = torch.nn.functional.interpolate(img[None], size=gdino_input_size(H, W, 64, 128), mode="bilinear",
                                        align_corners=False, antialias=True)[0]
    x = (x / 255 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        out = eng.gdino(nested_tensor_from_tensor_list([x]), captions=[eng.prompts.caption])
    probs = out["pred_logits"][0].sigmoid().numpy()  # (nq, 256)
    tc = token_classes(eng.prompts, eng.gdino.tokenizer)
    expected = []
    for q in range(probs.shape[0]):
        tokens = np.flatnonzero(tc >= 0)
        best = tokens[np.argmax(probs[q, tokens])]
        expected.append((float(probs[q, best]), int(tc[best])))
    expected.sort(key=lambda t: -t[0])
    np.testing.assert_allclose(det.score.numpy(), [s for s, _ in expected], rtol=1e-5)
    assert det.label.tolist() == [c for _, c in expected]


def test_class_thresholds_and_unprompted_classes(models):
    src = ImagesSource()
    cfg = make_cfg(models, thresholds={"car": 1.0}, prompts={"sky": []})
    lab = make_labeler("grounded-sam", cfg, src)
    lab.check()
    props = lab.propose_batch([0, 1, 2], [src.image("train", i) for i in range(3)])
    prompts = np.concatenate([p.prompt for p in props])
    assert prompts.size > 0
    assert not np.isin(prompts, [1, 2]).any()  # car never passes threshold 1.0; sky is not prompted
    assert "sky" not in lab.meta()["caption"]
    strict = make_labeler("grounded-sam", make_cfg(models, box_threshold=1.0), src)
    strict.check()
    p = strict.propose(0, src.image("train", 0), None)
    assert (p.segment == -1).all() and (p.label0 == 255).all() and p.score.size == 0


def test_ground_truth_is_not_used(labeler):
    src = ImagesSource()
    img = src.image("train", 2)
    a = labeler.propose(2, img, None)
    b = labeler.propose(2, img, src.label("train", 2))
    np.testing.assert_array_equal(a.segment, b.segment)
    np.testing.assert_array_equal(a.label0, b.label0)


def test_bf16_and_voc_fill_label(models):
    """bf16 autocast (CPU here, CUDA on GPUs) and a VOC-like label space: uncovered pixels are background (0)."""
    voc = ClassInfo(("background", "person", "car"), default_palette(3), fill_label=0, convention="voc")
    src = ImagesSource(voc)
    cfg = make_cfg(models, precision="bf16", short_side=None, max_side=None)
    bf = make_labeler("grounded-sam", cfg, src)
    assert bf.input_size() == (800, 1333)  # GroundingDINO's default outside Cityscapes
    bf.opts.short_side, bf.opts.max_side = 64, 128
    bf.check()
    assert bf._engine.bf16
    images = [src.image("train", i) for i in range(2)]
    props = bf.propose_batch([0, 1], images)
    uncovered = 0
    for (d, masks), p in zip(raw_masks(bf, images), props):
        assert len(d.label) > 0
        assert_smaller_on_top(p.segment, p.label0, masks, d.label.numpy(), fill=0)
        uncovered += int((p.segment < 0).sum())
    assert uncovered > 0  # the fill label was exercised


def test_meta_identifies_the_run(models):
    src = ImagesSource()
    m0 = make_labeler("grounded-sam", make_cfg(models), src).meta()
    assert make_labeler("grounded-sam", make_cfg(models, batch_size=1, precision="fp32"), src).meta() == m0
    assert make_labeler("grounded-sam", make_cfg(models, box_threshold=0.3), src).meta() != m0
    assert make_labeler("grounded-sam", make_cfg(models, prompts={"car": ["car", "person"]}), src).meta() != m0
    assert m0["sam"]["size"] == models["sam"].stat().st_size
    auto = make_labeler("grounded-sam", make_cfg(models, short_side=None, max_side=None), src)
    assert auto.input_size() == (512, 1024)  # Cityscapes-like data: the authors' GroundingDINO size


# ---------------------------------------------------------------------------------------------- errors
def _check_error(models, tmp_path, **overrides) -> str:
    lab = make_labeler("grounded-sam", make_cfg(models, **overrides), ImagesSource())
    with pytest.raises(A2LCError) as e:
        lab.check()
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_files_are_one_line_errors(models, tmp_path):
    assert "does not exist" in _check_error(models, tmp_path, sam_checkpoint=str(tmp_path / "nope.pth"))
    assert "does not exist" in _check_error(models, tmp_path, gdino_checkpoint=str(tmp_path / "nope.pth"))
    assert "text encoder folder" in _check_error(models, tmp_path, text_encoder=str(tmp_path / "no-bert"))
    empty = tmp_path / "empty-bert"
    empty.mkdir()
    assert "no config.json" in _check_error(models, tmp_path, text_encoder=str(empty))
    assert "neither SwinT/SwinB nor an existing file" in _check_error(models, tmp_path, gdino_config="SwinX")
    assert "needs --sam-checkpoint" in _check_error(models, tmp_path, sam_checkpoint=None)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    assert "not a readable SAM checkpoint" in _check_error(models, tmp_path, sam_checkpoint=str(junk))


def test_mismatched_checkpoints_are_one_line_errors(models, tmp_path):
    msg = _check_error(models, tmp_path, sam_type="vit_b")
    assert "does not match SAM --sam-type vit_b: the file's encoder width is 32, vit_b has 768" in msg
    msg = _check_error(models, tmp_path, sam_checkpoint=str(models["gdino"]))
    assert "GroundingDINO checkpoint, not a SAM one" in msg
    msg = _check_error(models, tmp_path, gdino_checkpoint=str(models["sam"]))
    assert "SAM checkpoint, not a GroundingDINO one" in msg
    swinb = tmp_path / "swinb.pth"  # only the tensor that tells the backbone apart
    torch.save({"model": {"backbone.0.patch_embed.proj.weight": torch.zeros(128, 3, 4, 4)}}, swinb)
    msg = _check_error(models, tmp_path, gdino_checkpoint=str(swinb))
    assert "the file's Swin backbone width is 128, the config's 96 — try --gdino-config SwinB" in msg
    deeper = write_gdino_config(tmp_path / "gdino_2layers.py", layers=2)
    msg = _check_error(models, tmp_path, gdino_config=str(deeper))
    assert f"does not match GroundingDINO config {deeper}" in msg and "weights are missing" in msg
    spec = tmp_path / "bad_spec.json"
    spec.write_text(json.dumps({**SAM_TINY, "depth": 3}))
    assert "unknown SAM spec key 'depth'" in _check_error(models, tmp_path, sam_type=str(spec))


# ---------------------------------------------------------------------------------------------- CLI end to end
SYNTH = ["init", "--source", "synthetic", "--n-train", "3", "--n-val", "2", "--height", str(H), "--width", str(W)]


def cli_args(models: dict[str, Path], *extra: object) -> list[object]:
    return ["pseudolabel", "--labeler", "grounded-sam", "--sam-checkpoint", models["sam"], "--sam-type", models["sam_type"],
            "--gdino-checkpoint", models["gdino"], "--gdino-config", models["gdino_config"], "--text-encoder", models["bert"],
            "--box-threshold", "0", "--short-side", "64", "--max-side", "128", "--device", "cpu",
            "--prompt", "road=road,street", "--class-threshold", "sky=1.0", *extra]


def dataset_arrays(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_dataset(a: Path, b: Path, *, score_rtol: float = 0.0) -> None:
    x, y = dataset_arrays(a), dataset_arrays(b)
    assert x.keys() == y.keys()
    for k in x:
        if k == "masks/score":
            np.testing.assert_allclose(x[k], y[k], rtol=score_rtol, err_msg=k)
        else:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def run_cli(*args: object) -> tuple[int, str]:
    """The CLI in-process (for module fixtures, where the ``cli`` fixture is not available)."""
    import contextlib
    import io

    from a2lc_cli.cli import invoke

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = invoke([str(a) for a in ["-q", *args]])
    return code, out.getvalue()


def synthetic_run(models, root: Path, *extra: object) -> tuple[Path, dict]:
    ws = root / "ws"
    assert run_cli("-w", ws, *SYNTH)[0] == 0
    code, out = run_cli("-w", ws, *cli_args(models, *extra), "--json")
    assert code == 0
    return ws, json.loads(out)


@pytest.fixture(scope="module")
def fresh(models, tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted run on the built-in synthetic source, 2 images per batch: workspace, --json summary."""
    return synthetic_run(models, tmp_path_factory.mktemp("fresh"), "--batch-size", "2")


@pytest.fixture(scope="module")
def fresh1(models, tmp_path_factory) -> tuple[Path, dict]:
    """The same, one image per batch (the reference for resumed and sharded runs, which batch differently)."""
    return synthetic_run(models, tmp_path_factory.mktemp("fresh1"), "--batch-size", "1")


def test_cli_writes_a_consistent_dataset(models, fresh):
    from a2lc_cli.data import open_source
    from a2lc_cli.state import Dataset
    from a2lc_cli.workspace import Workspace

    ws, summary = fresh
    assert summary["labeler"] == "grounded-sam" and summary["images"] == 3 and summary["masks"] > 3
    cfg = Workspace(ws).config()
    gs = cfg.pseudolabel.grounded_sam
    assert cfg.pseudolabel.labeler == "grounded-sam"
    assert gs.sam_checkpoint == str(models["sam"]) and gs.text_encoder == str(models["bert"])
    assert gs.prompts == {"road": ["road", "street"]} and gs.thresholds == {"sky": 1.0} and gs.box_threshold == 0.0
    assert gs.batch_size == 2

    # the labeler run directly, in the same batches, from the saved config
    source = open_source(cfg)
    sky = source.classes.index("sky")
    lab = make_labeler("grounded-sam", cfg, source)
    images = [source.image("train", i) for i in range(3)]
    props = lab.propose_batch([0, 1], images[:2]) + lab.propose_batch([2], images[2:])
    with Dataset(ws / "dataset.h5") as ds:
        assert ds.n_images == 3 and ds.n_masks == summary["masks"] and ds.fill_label == 255
        prompt, score, label0m = ds.mask_column("prompt"), ds.mask_column("score"), ds.mask_label0
        area, bbox, image = ds.mask_area, ds.mask_column("bbox"), ds.mask_image
        assert not np.isin(prompt, [sky]).any()  # sky's threshold 1.0 lets no box through
        np.testing.assert_array_equal(prompt, label0m.astype(np.int16))  # a mask's label is its prompt's class
        for i, p in enumerate(props):
            sl = ds.masks_of(i)
            seg, lab0 = ds.segment(i), ds.label0(i)
            kept = np.unique(p.segment[p.segment >= 0])  # masks that kept pixels, renumbered densely
            remap = np.full(p.segment.max() + 2, -1)
            remap[kept] = np.arange(sl.start, sl.start + kept.size)
            np.testing.assert_array_equal(seg, remap[p.segment])
            np.testing.assert_array_equal(lab0, p.label0)
            np.testing.assert_array_equal(score[sl], p.score[kept])
            np.testing.assert_array_equal(prompt[sl], p.prompt[kept])
            assert (image[sl] == i).all()
            np.testing.assert_array_equal(area[sl], np.bincount(seg[seg >= 0] - sl.start, minlength=kept.size))
            covered = seg >= 0
            np.testing.assert_array_equal(lab0[covered], label0m[seg[covered]])  # every pixel carries its mask's label
            assert (lab0[~covered] == 255).all()  # fill label
            ys, xs = np.nonzero(covered)
            m = seg[covered] - sl.start
            for k in range(kept.size):
                assert tuple(bbox[sl][k]) == (xs[m == k].min(), ys[m == k].min(), xs[m == k].max() + 1, ys[m == k].max() + 1)
            np.testing.assert_array_equal(ds.gt(i), source.label("train", i))


def test_cli_resumes_an_interrupted_run_of_the_same_options(cli, models, tmp_path, monkeypatch, fresh1):
    from a2lc_cli.data.synthetic import SyntheticSource

    original = SyntheticSource.image

    def failing(self, split, index):
        if index == 2:
            raise A2LCError("image 2 is unreadable")
        return original(self, split, index)

    # an interrupted run with other options is not resumed
    ws = tmp_path / "ws"
    assert cli("-w", ws, *SYNTH)[0] == 0
    monkeypatch.setattr(SyntheticSource, "image", failing)
    code, _, err = cli("-w", ws, *cli_args(models, "--box-threshold", "0.5", "--batch-size", "1"))
    assert code == 2 and "image 2 is unreadable" in err
    assert not (ws / "dataset.h5").exists() and (ws / ".dataset.h5.partial").exists()
    monkeypatch.setattr(SyntheticSource, "image", original)
    code, _, err = cli("-w", ws, *cli_args(models, "--batch-size", "1"))
    assert code == 0 and "resuming" not in err
    assert_same_dataset(fresh1[0] / "dataset.h5", ws / "dataset.h5")
    # an interrupted run with the same options continues where it stopped
    ws = tmp_path / "ws2"
    assert cli("-w", ws, *SYNTH)[0] == 0
    monkeypatch.setattr(SyntheticSource, "image", failing)
    assert cli("-w", ws, *cli_args(models, "--batch-size", "1"))[0] == 2
    monkeypatch.setattr(SyntheticSource, "image", original)
    code, _, err = cli("-w", ws, *cli_args(models, "--batch-size", "1"))
    assert code == 0, err
    assert "resuming pseudolabel at image 2 of 3" in " ".join(err.split())
    assert_same_dataset(fresh1[0] / "dataset.h5", ws / "dataset.h5")


def test_torchrun_shards_images_over_ranks_and_merges(models, tmp_path, fresh1):
    """2 CPU processes under torchrun (gloo): rank 0 labels image 0, rank 1 images 1-2; one merged dataset.h5."""
    import os
    import shutil
    import socket
    import subprocess
    import sys

    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(fresh1[0] / "config.json", ws / "config.json")  # the saved options: no flags needed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the reference ran in this process: same thread count, same float reduction order
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "a2lc_cli", "-w", str(ws), "pseudolabel", "--json"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout[r.stdout.index("{"):])  # rank 0 alone prints
    assert summary["ranks"] == 2 and summary["images"] == 3 and summary["masks"] == fresh1[1]["masks"]
    assert_same_dataset(fresh1[0] / "dataset.h5", ws / "dataset.h5", score_rtol=1e-4)
    assert not (ws / ".dataset-shards").exists()  # shards removed after the merge
    assert not (ws / ".lock").exists()


def test_cli_rejects_bad_checkpoints_before_any_image(cli, models, tmp_path):
    from a2lc_cli.data import open_source
    from a2lc_cli.stage_inputs import StageInputs

    seen = []

    def spy_source(cfg):  # the config's source, every image read recorded (passed as the stage's input)
        source = open_source(cfg)
        read = source.image
        source.image = lambda s, i: seen.append(i) or read(s, i)
        return source

    ws = tmp_path / "ws"
    assert cli("-w", ws, *SYNTH)[0] == 0
    for extra, message in [
        (["--text-encoder", tmp_path / "missing-bert"], "text encoder folder"),
        (["--sam-type", "vit_h"], "encoder width is 32, vit_h has 1280"),
        (["--sam-checkpoint", tmp_path / "nope.pth"], "does not exist"),
    ]:
        code, out, err = cli("-w", ws, *cli_args(models, *extra), inputs=StageInputs(source=spy_source))
        assert code == 2 and out == ""
        flat = " ".join(err.split())  # rich wraps long lines at the terminal width
        assert flat.startswith("error: ") and message in flat and "Traceback" not in err
    assert seen == [] and not (ws / ".dataset.h5.partial").exists() and not (ws / "dataset.h5").exists()


def test_text_encoder_weights_come_from_the_folder_when_the_checkpoint_lacks_them(models, tmp_path):
    from transformers import BertConfig, BertModel

    from a2lc_cli.labelers.grounded_sam.models import load_gdino, read_state_dict

    sd = read_state_dict(models["gdino"], what="GroundingDINO")
    nobert = tmp_path / "nobert.pth"
    torch.save({"model": {k: v for k, v in sd.items() if not k.startswith("bert.")}}, nobert)
    msg = _check_error(models, tmp_path, gdino_checkpoint=str(nobert))  # the folder has no weights either
    assert "weights are missing (first: bert." in msg
    folder = write_bert(tmp_path / "bert-with-weights")
    torch.manual_seed(1)
    BertModel(BertConfig.from_pretrained(folder)).save_pretrained(folder)
    model = load_gdino(nobert, str(models["gdino_config"]), folder)
    ref = BertModel.from_pretrained(folder).state_dict()
    own = model.bert.state_dict()
    assert own.keys() <= ref.keys() and len(own) > 10
    for k, v in own.items():
        assert torch.equal(v, ref[k]), k
    assert torch.equal(model.feat_map.weight, sd["feat_map.weight"])  # the rest from the checkpoint


def test_device_painting_equals_paint_masks():
    from a2lc_cli.labelers.base import paint_masks
    from a2lc_cli.labelers.grounded_sam.engine import paint_masks_device

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:40, :50]
    for k in (0, 1, 7, 40):
        masks = np.zeros((k, 40, 50), bool)
        for i in range(k):
            y0, x0 = rng.integers(0, 35), rng.integers(0, 45)
            masks[i] = (yy >= y0) & (yy < y0 + rng.integers(1, 30)) & (xx >= x0) & (xx < x0 + rng.integers(1, 30))
        if k >= 7:
            masks[3] = masks[5]  # equal areas: input order decides (the later one ends on top)
            masks[6] = False  # an empty mask
        labels = rng.integers(0, 19, k)
        seg_ref, lab_ref = paint_masks(masks, labels, 255)
        seg, lab = paint_masks_device(torch.from_numpy(masks), torch.from_numpy(labels), 255, chunk=3)
        np.testing.assert_array_equal(seg.numpy(), seg_ref)
        np.testing.assert_array_equal(lab.numpy(), lab_ref)
        assert seg.dtype == torch.int32 and lab.dtype == torch.uint8


def test_gdino_falls_back_to_float32_when_bf16_autocast_fails(labeler, monkeypatch):
    from a2lc_cli.labelers.grounded_sam.engine import GroundedSamEngine

    ref = labeler._engine  # float32
    eng = GroundedSamEngine(
        ref.gdino, ref.sam, prompts=ref.prompts, token_class=token_classes(ref.prompts, ref.gdino.tokenizer),
        fill_label=255, device=torch.device("cpu"), bf16=True, short_side=64, max_side=128,
    )
    forward = type(ref.gdino).forward
    calls = []

    def fragile(self, *args, **kw):
        calls.append(torch.is_autocast_enabled("cpu"))
        if calls[-1]:
            raise RuntimeError("expected mat1 and mat2 to have the same dtype, but got: c10::BFloat16 != float")
        return forward(self, *args, **kw)

    monkeypatch.setattr(type(ref.gdino), "forward", fragile)
    x = [torch.from_numpy(ImagesSource().image("train", 0)).permute(2, 0, 1).float()]
    got = eng.detect(x)[0]
    assert calls == [True, False] and not eng.gdino_bf16 and eng.bf16  # SAM keeps bf16
    eng.detect(x)
    assert calls == [True, False, False]  # no second bf16 attempt
    want = ref.detect(x)[0]
    np.testing.assert_array_equal(got.label.numpy(), want.label.numpy())
    np.testing.assert_allclose(got.score.numpy(), want.score.numpy())
