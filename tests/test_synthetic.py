"""The built-in benchmark (SPEC §4): generator determinism, class frequencies, the simulated
foundation model's masks and noise, and the initial Data mIoU targets of issue 2."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from a2lc_cli.config import Config
from a2lc_cli.data import open_source
from a2lc_cli.data.base import VOID
from a2lc_cli.data.synthetic import CITY_NAMES, CITY_PALETTE, PRESETS, VOC_NAMES, SyntheticSource
from a2lc_cli.errors import A2LCError
from a2lc_cli.labelers import make_labeler
from a2lc_cli.labelers.simulate import NOISE, SimulatedFoundationModel, class_quota_threshold
from a2lc_cli.metrics import confusion_matrix, iou_from_confusion
from a2lc_cli.state import mask_majority


def _cfg(preset: str = "city", seed: int = 0, **source) -> Config:
    cfg = Config()
    cfg.seed = seed
    cfg.source.preset = preset
    for k, v in source.items():
        setattr(cfg.source, k, v)
    return cfg


def _pair(preset: str = "city", seed: int = 0, **source) -> tuple[SyntheticSource, SimulatedFoundationModel]:
    cfg = _cfg(preset, seed, **source)
    src = open_source(cfg)
    lab = make_labeler("simulate", cfg, src)
    assert isinstance(src, SyntheticSource) and isinstance(lab, SimulatedFoundationModel)
    return src, lab


def _round0_miou(src: SyntheticSource, lab: SimulatedFoundationModel, *, oracle: bool = False) -> float:
    """Data mIoU of the round-0 labels (or of every mask relabelled with its GT majority)."""
    c = src.classes.num_classes
    conf = np.zeros((c, c + 1), np.int64)
    for i in range(len(src.names("train"))):
        gt = src.label("train", i)
        prop = lab.propose(i, src.image("train", i), gt)
        labels = prop.label0
        if oracle:
            seg = prop.segment.ravel()
            cov = seg >= 0
            maj, _, _ = mask_majority(seg[cov], gt.ravel()[cov], int(seg.max()) + 1)
            labels = labels.copy().ravel()
            labels[cov] = maj[seg[cov]]
        conf += confusion_matrix(labels, gt, c)
    return iou_from_confusion(conf).miou


# --------------------------------------------------------------------------- presets and determinism
def test_presets_follow_the_dataset_conventions():
    city = SyntheticSource(preset="city").classes
    assert city.names == CITY_NAMES and len(city.names) == 19
    assert city.names[:3] == ("road", "sidewalk", "building") and city.names[-1] == "bicycle"
    assert city.fill_label == VOID and city.convention == "cityscapes"
    assert tuple(city.palette[0]) == (128, 64, 128) and tuple(city.palette[10]) == (70, 130, 180)
    np.testing.assert_array_equal(city.palette, CITY_PALETTE)
    voc = SyntheticSource(preset="voc").classes
    assert voc.names == VOC_NAMES and voc.names[0] == "background" and len(voc.names) == 21
    assert voc.fill_label == 0 and voc.convention == "voc"
    assert tuple(voc.palette[1]) == (128, 0, 0) and tuple(voc.palette[15]) == (192, 128, 128)  # aeroplane, person


def test_default_sizes_and_config_overrides():
    src = SyntheticSource.from_config(_cfg("city"))
    assert len(src.names("train")) == PRESETS["city"].n_train and len(src.names("val")) == PRESETS["city"].n_val
    assert src.image("train", 0).shape == (96, 192, 3) and src.label("val", 0).shape == (96, 192)
    src = SyntheticSource.from_config(_cfg("voc", n_train=7, n_val=3, height=64, width=80))
    assert len(src.names("train")) == 7 and len(src.names("val")) == 3 and len(set(src.names("train"))) == 7
    img, gt = src.image("train", 6), src.label("train", 6)
    assert img.shape == (64, 80, 3) and img.dtype == np.uint8 and gt.shape == (64, 80) and gt.dtype == np.uint8
    assert src.size("train", 6) == (64, 80)
    assert set(np.unique(gt)) <= set(range(21)) | {VOID}


def test_same_seed_same_data_and_images_are_independent():
    SyntheticSource.clear_cache()
    b = SyntheticSource(preset="city", seed=3)
    # b renders in another order: image 5 must not depend on what was drawn before it
    for i in (9, 2, 5):
        b.image("train", i)
    seen = {(split, i): (b.image(split, i), b.label(split, i), b.scene(split, i).z) for split, i in (("train", 5), ("val", 1))}
    SyntheticSource.clear_cache()  # sources of equal parameters share renders: a must render afresh
    a = SyntheticSource(preset="city", seed=3)
    assert not a._cache
    for (split, i), (image, label, z) in seen.items():
        np.testing.assert_array_equal(a.image(split, i), image)
        np.testing.assert_array_equal(a.label(split, i), label)
        np.testing.assert_array_equal(a.scene(split, i).z, z)
    # another source of the same parameters is served from the shared renders
    assert SyntheticSource(preset="city", seed=3).scene("train", 5) is a.scene("train", 5)
    assert not np.array_equal(a.image("train", 5), a.image("train", 6))
    assert not np.array_equal(a.image("train", 5), a.image("val", 5))
    other = SyntheticSource(preset="city", seed=4)
    assert not np.array_equal(a.image("train", 5), other.image("train", 5))
    # a fresh source with a tiny cache still re-renders the same pixels
    SyntheticSource.clear_cache()
    c = SyntheticSource(preset="city", seed=3)
    c.CACHE = 1
    first = c.image("train", 5)
    c.image("train", 0)
    np.testing.assert_array_equal(first, c.image("train", 5))
    # returned arrays are copies: a caller scribbling on one cannot change the source
    first[:] = 0
    assert c.image("train", 5).any()


def test_simulated_labels_are_deterministic():
    src, lab = _pair("voc", seed=2, n_train=6)
    _, lab2 = _pair("voc", seed=2, n_train=6)
    for i in (4, 1):
        p, q = lab.propose(i, src.image("train", i), None), lab2.propose(i, src.image("train", i), None)
        np.testing.assert_array_equal(p.segment, q.segment)
        np.testing.assert_array_equal(p.label0, q.label0)
        np.testing.assert_array_equal(p.score, q.score)


def test_bad_input_is_a_one_line_error():
    with pytest.raises(A2LCError, match="preset 'kitti'"):
        SyntheticSource(preset="kitti")
    src = SyntheticSource(preset="city", n_train=4)
    with pytest.raises(A2LCError, match="train image 4 does not exist"):
        src.image("train", 4)
    with pytest.raises(A2LCError, match="split 'test'"):
        src.label("test", 0)
    with pytest.raises(A2LCError, match="split 'test'"):
        src.names("test")


# --------------------------------------------------------------------------- class frequencies
def _pixel_share(src: SyntheticSource, n: int) -> np.ndarray:
    counts = np.zeros(256, np.int64)
    for i in range(n):
        counts += np.bincount(src.label("train", i).ravel(), minlength=256)
    c = src.classes.num_classes
    return counts[:c] / counts[:c].sum()


def test_city_has_a_cityscapes_like_long_tail():
    src = SyntheticSource(preset="city", seed=1)
    share = _pixel_share(src, 60)
    idx = {n: k for k, n in enumerate(src.classes.names)}
    head = [idx[n] for n in ("road", "building", "vegetation", "sky")]
    tail = [idx[n] for n in ("traffic light", "rider", "motorcycle", "bicycle")]
    assert share[head].sum() > 0.6
    assert share[head].min() > 0.05
    assert (share > 0).all()  # every class appears in 60 images
    assert share[tail].max() < 0.01 and share[tail].min() > 0
    assert share[head].min() > 5 * share[tail].max()
    # the head classes are the four most frequent apart from car (Cityscapes: car ≈ 7%)
    top = set(np.argsort(share)[::-1][:5])
    assert set(head) <= top


def test_voc_background_dominates_with_a_milder_imbalance():
    src = SyntheticSource(preset="voc", seed=1)
    share = _pixel_share(src, 150)
    assert 0.55 < share[0] < 0.9
    objects = share[1:]
    assert (objects > 0).all()
    person = src.classes.index("person")
    assert share[person] == objects.max()
    # milder than city: no object class is below 1/30 of the most frequent one
    assert objects.min() > objects.max() / 30
    # a VOC-style 1-px void outline around objects, never on plain background
    gt = src.label("train", 0)
    assert (gt == VOID).any()
    scene = src.scene("train", 0)
    assert not (gt == VOID)[~scene.thing[scene.region]].any()


# --------------------------------------------------------------------------- masks
def test_masks_follow_the_proposal_conventions():
    src, lab = _pair("city", seed=0, n_train=40)
    fill = src.classes.fill_label
    uncovered = merged = 0
    for i in range(40):
        gt = src.label("train", i)
        p = lab.propose(i, src.image("train", i), gt)
        k = int(p.segment.max()) + 1
        assert p.segment.dtype == np.int32 and p.label0.dtype == np.uint8
        assert p.segment.shape == p.label0.shape == gt.shape
        # dense local ids, every one used, -1 = uncovered
        assert p.segment.min() >= -1
        assert (np.bincount(p.segment[p.segment >= 0], minlength=k) > 0).all()
        assert p.score.shape == p.prompt.shape == (k,)
        cov = p.segment >= 0
        assert (p.label0[~cov] == fill).all()
        # one label per mask (a mask is the unit every correction relabels)
        per_mask = np.zeros(k, np.int64) - 1
        per_mask[p.segment[cov]] = p.label0[cov]
        assert (per_mask[p.segment[cov]] == p.label0[cov]).all()
        assert (p.prompt == per_mask).all()
        uncovered += int((~cov).sum())
        # under-segmentation: masks whose ground truth is split between classes
        maj, votes, void = mask_majority(p.segment[cov], gt[cov], k)
        nonvoid = np.bincount(p.segment[cov], minlength=k) - void
        purity = votes / np.maximum(nonvoid, 1)
        merged += int(((purity < 0.8) & (nonvoid >= 20)).sum())
    assert uncovered > 0
    assert merged >= 3


def test_objects_are_whole_masks_and_stuff_is_split():
    src, lab = _pair("city", seed=0, n_train=20)
    idx = {n: k for k, n in enumerate(src.classes.names)}
    objects_in_one_mask, objects, road_masks = 0, 0, []
    for i in range(20):
        scene = src.scene("train", i)
        p, info = lab.simulate(i)
        road_masks.append(int((info["true"] == idx["road"]).sum()))
        seg, reg = p.segment, scene.region
        for r in np.flatnonzero(scene.thing & (scene.cls == idx["car"])):
            inside = seg[(reg == r) & (seg >= 0)]
            if inside.size < 30:
                continue
            objects += 1
            objects_in_one_mask += np.bincount(inside).max() >= 0.85 * inside.size
    assert objects >= 20 and objects_in_one_mask >= 0.9 * objects
    assert np.mean(road_masks) >= 2.5


def test_masks_are_written_consistently_to_the_dataset_file(cli, tmp_path):
    ws = tmp_path / "ws"
    assert cli("-w", ws, "init", "--source", "synthetic", "--preset", "city", "--seed", "1")[0] == 0
    cfg_path = ws / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["source"]["n_train"] = 12
    cfg["source"]["n_val"] = 4
    cfg_path.write_text(json.dumps(cfg))
    code, out, err = cli("-w", ws, "pseudolabel", "--json")
    assert code == 0, err
    src, lab = _pair("city", seed=1, n_train=12, n_val=4)
    with h5py.File(ws / "dataset.h5", "r") as f:
        offs = f["images/pixel_offset"][()]
        moffs = f["images/mask_offset"][()]
        assert f["masks/label0"].shape[0] == moffs[-1] > 12 * 20
        for i in (0, 11):
            p = lab.propose(i, src.image("train", i), None)
            seg = f["pixels/segment"][offs[i]:offs[i + 1]].reshape(96, 192)
            np.testing.assert_array_equal(seg, np.where(p.segment >= 0, p.segment + moffs[i], -1))
            np.testing.assert_array_equal(f["pixels/label0"][offs[i]:offs[i + 1]].reshape(96, 192), p.label0)
            np.testing.assert_array_equal(f["pixels/gt"][offs[i]:offs[i + 1]].reshape(96, 192), src.label("train", i))
            k = moffs[i + 1] - moffs[i]
            label0 = f["masks/label0"][moffs[i]:moffs[i + 1]]
            assert label0.shape == (k,) and (f["masks/image"][moffs[i]:moffs[i + 1]] == i).all()
            cov = p.segment >= 0
            np.testing.assert_array_equal(label0[p.segment[cov]], p.label0[cov])
    code, out, err = cli("-w", ws, "evaluate", "--metric", "data-miou", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["round"] == 0 and 0 < res["coverage"] < 100
    assert abs(res["miou"] - _round0_miou(src, lab)) < 1e-3


# --------------------------------------------------------------------------- noise
def _mask_records(preset: str, seed: int, n: int) -> tuple[SyntheticSource, dict[str, np.ndarray]]:
    src, lab = _pair(preset, seed=seed, n_train=n)
    rec: dict[str, list[np.ndarray]] = {"true": [], "label": [], "flipped": [], "z": [], "partner": [], "style": [],
                                        "role": []}
    for i in range(n):
        p, info = lab.simulate(i)
        scene = src.scene("train", i)
        per_mask = np.zeros(int(p.segment.max()) + 1, np.int64)
        cov = p.segment >= 0
        per_mask[p.segment[cov]] = p.label0[cov]
        rec["label"].append(per_mask)
        rec["partner"].append(scene.partner[info["region"]])
        rec["style"].append(scene.style[info["region"]])
        rec["role"].append(scene.role[info["region"]])
        for k in ("true", "flipped", "z"):
            rec[k].append(info[k])
    return src, {k: np.concatenate(v) for k, v in rec.items()}


def _region_flips(preset: str, seed: int, n: int) -> tuple[SyntheticSource, dict[str, np.ndarray]]:
    """Per flip-decided region (objects for voc, every non-void region for city) over n train
    images: class, latent z, area (px; a voc object with its parts) and the labeler's decision."""
    from a2lc_cli.labelers.simulate import _flip_items

    src, lab = _pair(preset, seed=seed, n_train=n)
    rec: dict[str, list[np.ndarray]] = {"cls": [], "z": [], "area": [], "flip": [], "miss": []}
    for i in range(n):
        scene = src.scene("train", i)
        items, area = _flip_items(scene, lab.model)
        d = lab.decisions(i, scene)
        rec["cls"].append(scene.cls[items].astype(np.int64))
        rec["z"].append(scene.z[items])
        rec["area"].append(area)
        rec["flip"].append(d["flip"][items])
        rec["miss"].append(d["miss"][items])
    return src, {k: np.concatenate(v) for k, v in rec.items()}


def test_class_quota_threshold_hand_computed():
    # class 0: keys 0.9, 0.5, 0.1 with 10, 30, 60 px; share 0.4 → the top two carry exactly 40%: the
    # crossing item (0.5) is taken whatever u, since (0.4 − 0.1)/0.3 = 1
    # class 1: share 0 → none; class 2: two halves, share 0.3 → the first crosses it, taken iff
    # u < 0.3/0.5 = 0.6; class 3 likewise with share 0.2: iff u < 0.4; class 4: no items → +inf
    key = np.array([0.9, 0.5, 0.1, 0.8, 0.2, 0.7, 0.6, 0.4, 0.3])
    cls = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3])
    w = np.array([10, 30, 60, 50, 50, 50, 50, 50, 50])
    share = np.array([0.4, 0.0, 0.3, 0.2, 0.5])
    t = class_quota_threshold(key, cls, w, share, np.array([0.99, 0.0, 0.59, 0.41, 0.0]))
    np.testing.assert_array_equal(t, [0.5, np.inf, 0.7, np.inf, np.inf])
    np.testing.assert_array_equal(key >= t[cls], [True, True, False, False, False, True, False, False, False])
    t = class_quota_threshold(key, cls, w, share, np.array([0.0, 0.0, 0.61, 0.39, 0.0]))
    np.testing.assert_array_equal(t, [0.5, np.inf, np.inf, 0.4, np.inf])
    # a share of 1 picks every item of the class; the expected picked share equals the share
    assert class_quota_threshold(key, cls, w, np.ones(4), np.full(4, 0.999))[0] == 0.1
    us = (np.arange(1000) + 0.5) / 1000
    got = [((key >= class_quota_threshold(key, cls, w, share, np.full(5, u))[cls]) & (cls == 3)).sum() * 0.5
           for u in us]
    assert abs(np.mean(got) - 0.2) < 1e-3


def test_noise_is_class_dependent_and_heavier_on_tail_classes():
    src, r = _mask_records("city", 0, 120)
    idx = {n: k for k, n in enumerate(src.classes.names)}
    valid = r["true"] != VOID
    true, flipped = r["true"][valid], r["flipped"][valid]
    rate = np.bincount(true, weights=flipped, minlength=19) / np.maximum(np.bincount(true, minlength=19), 1)
    head = [idx[n] for n in ("road", "building", "vegetation", "sky", "car")]
    tail = [idx[n] for n in ("traffic light", "rider", "motorcycle", "wall")]
    assert rate[head].max() < 0.2
    assert rate[tail].min() > 0.25
    # a flipped mask's label is never its true class
    assert (r["label"][valid][flipped] != true[flipped]).all()


@pytest.mark.parametrize("preset,seed", [("city", 0), ("city", 1), ("voc", 0), ("voc", 1)])
def test_flips_meet_the_class_pixel_share_on_every_seed(preset, seed):
    """Flips are a per-class quota, not coin flips: on every seed each class's flipped pixel share is
    the configured rate up to one region, and the regions flipped are those that look most like
    their partner (highest z)."""
    n = 120
    src, r = _region_flips(preset, seed, n)
    rate = np.asarray(NOISE[preset].flip_rate)
    checked = 0
    for c in np.unique(r["cls"]):
        sel = r["cls"] == c
        area, flip, z = r["area"][sel].astype(np.float64), r["flip"][sel], r["z"][sel]
        share = area[flip].sum() / area.sum()
        assert abs(share - rate[c]) <= area.max() / area.sum() + 1e-9, (c, share, rate[c])
        if flip.any() and (~flip).any():
            assert z[flip].min() >= z[~flip].max()  # the visual cause: the most partner-like flip
        if preset == "voc":  # misses are a quota of the class's object pixels too
            missed = area[r["miss"][sel]].sum() / area.sum()
            assert abs(missed - NOISE["voc"].miss[c]) <= area.max() / area.sum() + 1e-9, (c, missed)
        else:
            assert not r["miss"][sel].any()
        checked += 1
    assert checked >= 15
    # another n (a different train set) meets the same shares: the quota is over the seed's set
    _, r2 = _region_flips(preset, seed, 60)
    big = np.bincount(r2["cls"], weights=r2["area"], minlength=rate.size)
    got = np.bincount(r2["cls"], weights=r2["area"] * r2["flip"], minlength=rate.size) / np.maximum(big, 1)
    ok = big > 20 * r2["area"].mean()
    assert np.abs(got[ok] - rate[ok]).max() < 0.12


def test_flips_go_to_look_alike_partners():
    for preset in ("city", "voc"):
        src, r = _mask_records(preset, 1, 60)
        f = r["flipped"]
        assert f.sum() > 15
        np.testing.assert_array_equal(r["label"][f], r["partner"][f])
        spec = PRESETS[preset]
        for t, role, lab in zip(r["true"][f], r["role"][f], r["label"][f]):
            if role == 0:  # parts and decoys (voc) look like a class of their own draw (their lure)
                assert int(lab) in {p for p, _ in spec.partners[int(t)]}
    assert (3, 0.55) in [(p, w) for p, w in PRESETS["city"].partners[2]]  # building ↔ wall
    assert {p for p, _ in PRESETS["city"].partners[6]} == {7}  # traffic light → traffic sign
    assert {p for p, _ in PRESETS["voc"].partners[7]} == {20, 1}  # car → tvmonitor (or aeroplane)


def test_flips_follow_the_appearance_latent():
    _, r = _mask_records("city", 2, 120)
    # class-level confusions (traffic light, rider, train: flip rate ≥ 0.7) hit nearly every instance
    # whatever it looks like; the latent decides the look-alike flips of the other classes
    rate = np.array(NOISE["city"].flip_rate)
    sel = (r["true"] != VOID) & (rate[np.minimum(r["true"], 18)] < 0.7)
    z, f = r["z"][sel], r["flipped"][sel]
    assert z[f].mean() > z[~f].mean() + 0.25
    assert np.corrcoef(z, f)[0, 1] > 0.4
    # and not independent coin flips: almost no typical-looking (low z) region is mislabelled
    assert f[z < 0.1].mean() < 0.02
    assert f[z > 0.6].mean() > 0.6
    rate_by_z = [f[(z >= lo) & (z < lo + 0.15)].mean() for lo in (0.0, 0.15, 0.3, 0.45)]
    assert all(a <= b for a, b in zip(rate_by_z, rate_by_z[1:]))


def test_the_latent_pulls_appearance_towards_the_partner():
    """A region with a high z is coloured closer to its partner class's typical colour."""
    src = SyntheticSource(preset="city", seed=0)
    spec = src.spec
    ratio, zs = [], []
    for i in range(40):
        scene = src.scene("train", i)
        img = src.image("train", i).astype(np.float64)
        n = scene.n_regions
        area = np.bincount(scene.region.ravel(), minlength=n)
        mean = np.stack([np.bincount(scene.region.ravel(), weights=img[..., ch].ravel(), minlength=n)
                         for ch in range(3)], 1) / np.maximum(area, 1)[:, None]
        own = np.array([spec.styles[s].colour for s in scene.style])
        partner = np.array([spec.styles[p].colour for p in scene.partner])
        gap = np.linalg.norm(own - partner, axis=1)
        ok = (area >= 60) & (gap > 40) & (scene.cls != VOID)
        # position of the region's mean colour along the own → partner axis (0 = own, 1 = partner)
        t = ((mean - own) * (partner - own)).sum(1) / np.maximum(gap ** 2, 1)
        ratio.append(t[ok])
        zs.append(scene.z[ok])
    t, z = np.concatenate(ratio), np.concatenate(zs)
    assert t.size > 200
    assert np.corrcoef(z, t)[0, 1] > 0.5
    assert t[z > 0.5].mean() > t[z < 0.2].mean() + 0.2


# --------------------------------------------------------------------------- targets (issue 2)
@pytest.mark.parametrize("seed", [0, 3])
def test_initial_data_miou_of_city_is_near_the_papers_start(seed):
    src, lab = _pair("city", seed=seed, n_train=80)
    assert 45 <= _round0_miou(src, lab) <= 58


@pytest.mark.parametrize("seed", [0, 4])
def test_initial_data_miou_of_voc_is_near_the_papers_start(seed):
    src, lab = _pair("voc", seed=seed, n_train=120)
    assert 52 <= _round0_miou(src, lab) <= 65


def test_mask_level_oracle_is_capped_by_mask_realism():
    src, lab = _pair("city", seed=1, n_train=60)
    assert 84 <= _round0_miou(src, lab, oracle=True) <= 93
    # voc on its whole train set: misses are a per-class pixel quota over the set, and on a few dozen
    # images the quota of a rare class rounds to no miss at all (real ceiling 90.6; the full set gives ≈ 92.6)
    src, lab = _pair("voc", seed=1)
    assert 84 <= _round0_miou(src, lab, oracle=True) <= 94


def test_simulate_needs_the_synthetic_source():
    cfg = _cfg("city")
    cfg.source.kind = "folder"

    class NotSynthetic:
        classes = SyntheticSource().classes

    with pytest.raises(A2LCError, match="simulate labeler needs the built-in synthetic source"):
        SimulatedFoundationModel(cfg, NotSynthetic())  # type: ignore[arg-type]


def test_fill_label_override_reaches_the_simulated_labels():
    src, lab = _pair("city", seed=0, n_train=8, fill_label=0)
    assert src.classes.fill_label == 0
    props = [lab.propose(i, src.image("train", i), None) for i in range(8)]
    uncovered = np.concatenate([p.label0[p.segment < 0] for p in props])
    assert uncovered.size > 0 and (uncovered == 0).all()


def test_detector_scores_track_the_latent_and_voc_has_no_background_masks():
    _, lab = _pair("city", seed=0, n_train=10)
    props = [lab.simulate(i) for i in range(10)]
    score = np.concatenate([p.score for p, _ in props])
    z = np.concatenate([info["z"] for _, info in props])
    assert np.isfinite(score).all() and ((score > 0) & (score < 1)).all()
    assert np.corrcoef(score, z)[0, 1] < -0.5  # typical-looking regions are detected confidently
    src, lab = _pair("voc", seed=0, n_train=10)
    for i in range(10):
        p = lab.propose(i, src.image("train", i), None)
        k = p.score.shape[0]
        per_mask = np.zeros(k, np.int64)
        per_mask[p.segment[p.segment >= 0]] = p.label0[p.segment >= 0]
        # masks come only from detections: none is background, every one has a score and a prompt
        assert (per_mask > 0).all()
        assert np.isfinite(p.score).all() and (p.prompt == per_mask).all()
