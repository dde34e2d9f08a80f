"""`a2lc demo` on tiny data through the CLI: both methods, shared round 0, same budget, the JSON
shape of issue 5, the report and its plots, and a rerun that continues instead of redoing."""

from __future__ import annotations

import json

from a2lc_cli.state import read_query

TINY = ["--set", "source.n_train=12", "--set", "source.n_val=4", "--set", "source.height=48",
        "--set", "source.width=96", "--set", "train.iterations=20", "--set", "lcm.epochs=5"]


def test_demo_runs_both_methods_with_one_budget_and_writes_the_report(tmp_path, cli):
    root = tmp_path / "demo"
    code, out, err = cli("-w", root, "demo", "--rounds", "2", "--budget", "7", "--json", *TINY)
    assert code == 0, err
    res = json.loads(out)
    assert set(res) == {"benchmark", "a2lc", "alc"}
    for method, rounds in ((m, res[m]) for m in ("a2lc", "alc")):
        assert [r["round"] for r in rounds] == [0, 1, 2]
        assert [r["budget_used"] for r in rounds] == [0, 7, 14]
        assert set(rounds[0]) == {"round", "data_miou", "model_miou", "budget_used", "lcm_corrected"}
        assert all(0 <= r["data_miou"] <= 100 and 0 <= r["model_miou"] <= 100 for r in rounds)
    # round 0 is shared: same pseudo-labels and the same θ_0, so the same starting metrics
    assert res["a2lc"][0] == res["alc"][0]
    assert (root / "a2lc/rounds/r000/model.pt").read_bytes() == (root / "alc/rounds/r000/model.pt").read_bytes()
    # the presets took effect: mask-level answers and LCM for A²LC, pixel-level answers and no LCM for ALC
    assert read_query(root / "a2lc/rounds/r001/query.h5").answers.unit.tolist() == [0] * 7  # 0 = mask-level
    assert read_query(root / "alc/rounds/r001/query.h5").answers.unit.tolist() == [1] * 7  # 1 = pixel-level
    assert (root / "a2lc/rounds/r001/lcm.h5").exists() and not (root / "alc/rounds/r001/lcm.h5").exists()
    report = (root / "report/report.md").read_text()
    assert "| A2LC | Data mIoU |" in report and "| ALC | Data mIoU |" in report and "Data IoU per class" in report
    for png in ("miou.png", "queried_classes.png"):
        assert (root / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = (root / "alc/rounds/r002/model.pt").stat().st_mtime_ns
    code, out2, err = cli("-w", root, "demo", "--rounds", "2", "--budget", "7", "--json", *TINY)
    assert code == 0, err
    assert json.loads(out2) == res  # finished rounds are not redone
    assert (root / "alc/rounds/r002/model.pt").stat().st_mtime_ns == before


def test_demo_refuses_method_options(tmp_path, cli):
    code, _, err = cli("-w", tmp_path / "d", "demo", "--set", "method.lcm=false")
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_demo_methods_option_runs_and_plots_each_method(tmp_path, cli):
    root = tmp_path / "demo3"
    code, out, err = cli("-w", root, "demo", "--rounds", "1", "--budget", "7", "--json", "--methods", "alc,a2lc+", *TINY)
    assert code == 0, err
    res = json.loads(out)
    assert list(res) == ["benchmark", "alc", "a2lc+"]
    assert res["alc"][0] == res["a2lc+"][0]  # round 0 shared
    assert [r["budget_used"] for r in res["a2lc+"]] == [0, 7]
    assert (root / "a2lc+/rounds/r001/lcm.h5").exists() and not (root / "a2lc/rounds").exists()
    report = (root / "report/report.md").read_text()
    assert "| A2LC+ | Data mIoU |" in report and "| ALC | Data mIoU |" in report
    assert "| A2LC+ | LCM corrections | — | " in report and "| ALC | LCM corrections |" not in report  # only LCM methods
    assert "| A2LC+ | Model mIoU |" in report and "| ALC | Model mIoU |" in report
    assert report.startswith("# a2lc demo: ALC vs A2LC+")
    assert res["a2lc+"][1]["lcm_corrected"] is not None and res["alc"][1]["lcm_corrected"] is None
    # the plot's data: both panels have one line per method, named, each in its own style (identical curves
    # would otherwise hide each other)
    from a2lc_cli.report import collect_run, miou_figure
    from a2lc_cli.workspace import Workspace

    fig = miou_figure({m: collect_run(Workspace(root / m)) for m in ("alc", "a2lc+")})
    for ax in fig.axes:
        lines = ax.get_lines()
        assert [ln.get_label() for ln in lines] == ["ALC", "A2LC+"]
        assert len({(ln.get_linestyle(), ln.get_marker()) for ln in lines}) == 2
        assert [list(ln.get_xdata()) for ln in lines] == [[0, 1], [0, 1]]
        key = "data_miou" if ax is fig.axes[0] else "model_miou"
        assert [ln.get_ydata()[1] for ln in lines] == [res["alc"][1][key], res["a2lc+"][1][key]]


def test_demo_refuses_unknown_or_repeated_methods(tmp_path, cli):
    for bad in ("a2lc,bogus", "alc,alc", ","):
        code, _, err = cli("-w", tmp_path / "d", "demo", "--methods", bad)
        assert code != 0 and err.startswith("error:") and "--methods" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_methods_side_by_side_give_the_same_rounds_as_one_after_the_other(tmp_path):
    # jobs=2 runs A²LC and ALC in two processes; jobs=1 one after the other in this one
    import numpy as np
    import torch

    from a2lc_cli.demo import demo_jobs, run_demo

    opts = {k: v for k, v in (item.split("=", 1) for item in TINY[1::2])}
    res = {j: run_demo(tmp_path / f"j{j}", rounds=1, budget=5, device="cpu", options=opts, jobs=j) for j in (1, 2)}
    for m in ("a2lc", "alc"):
        one, two = (res[j]["runs"][m]["rounds"] for j in (1, 2))
        assert [r["round"] for r in one] == [r["round"] for r in two] == [0, 1]
        # the same selection, answers and labels: Data mIoU and the budget exactly
        assert [(r["data_miou"], r["budget_used"]) for r in one] == [(r["data_miou"], r["budget_used"]) for r in two]
        a, b = (read_query(tmp_path / f"j{j}/{m}/rounds/r001/query.h5") for j in (1, 2))
        np.testing.assert_array_equal(a.selected, b.selected)
        np.testing.assert_array_equal(a.answers.unit, b.answers.unit)
        # θ_1 to the float rounding of oneDNN's CPU kernels in another process (not bitwise)
        assert abs(one[1]["model_miou"] - two[1]["model_miou"]) < 0.5
        wa, wb = (torch.load(tmp_path / f"j{j}/{m}/rounds/r001/model.pt", weights_only=True)["state_dict"] for j in (1, 2))
        assert all(torch.allclose(wa[k].float(), wb[k].float(), rtol=1e-2, atol=1e-2) for k in wa)
    assert demo_jobs(("a2lc", "alc"), "cuda") == 1 and demo_jobs(("a2lc", "alc"), "cpu", jobs=1) == 1
    assert demo_jobs(("a2lc", "alc", "a2lc+"), "cpu", jobs=8) == 3


def _as_benchmark_v1(dataset_path) -> None:
    """Mark a dataset.h5 written by the current simulator as benchmark v1's (the meta v1 wrote: noise_version 1)."""
    import h5py

    with h5py.File(dataset_path, "r+") as f:
        meta = json.loads(f.attrs["meta"])
        assert meta["labeler"] == "simulate"
        meta["noise_version"] = 1
        f.attrs["meta"] = json.dumps(meta, sort_keys=True)


def test_demo_names_the_benchmark_version_and_refuses_an_older_benchmarks_folder(tmp_path, cli):
    from a2lc_cli.labelers.simulate import NOISE_VERSION

    root = tmp_path / "demo"
    code, out, err = cli("-w", root, "demo", "--rounds", "1", "--budget", "3", "--methods", "alc", *TINY)
    assert code == 0, err
    assert f"on the built-in city benchmark v{NOISE_VERSION} (3 masks per round)" in " ".join(out.split())
    code, out, err = cli("-w", root, "demo", "--rounds", "1", "--budget", "3", "--methods", "alc", "--json", *TINY)
    assert code == 0, err
    assert json.loads(out)["benchmark"] == {"preset": "city", "version": NOISE_VERSION}

    _as_benchmark_v1(root / "alc/dataset.h5")
    config = (root / "alc/config.json").read_bytes()
    models = sorted((root / "alc/rounds").rglob("*"))
    code, out, err = cli("-w", root, "demo", "--rounds", "2", "--budget", "3", "--methods", "alc", *TINY)
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert "benchmark v1" in err and str(root) in err and "new folder" in err
    assert sorted((root / "alc/rounds").rglob("*")) == models  # nothing was run or written
    assert (root / "alc/config.json").read_bytes() == config


def test_demo_help_gives_each_presets_default_budget(cli):
    from a2lc_cli.config import BUDGET_SHARE

    code, out, _ = cli("demo", "--help")
    assert code == 0
    text = " ".join(out.replace("│", " ").split())
    assert f"city {BUDGET_SHARE['city']:.0%}" in text and f"voc {BUDGET_SHARE['voc']:.0%}" in text
    assert "4% of all masks" not in text
