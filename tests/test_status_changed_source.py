"""``a2lc status`` flags a dataset whose train images the config no longer describes (``source.*``, seed)."""

from __future__ import annotations

import json
import shlex

from a2lc_cli.config import Config
from a2lc_cli.state import Dataset
from a2lc_cli.status import source_changes

TINY = ["source.n_train=4", "source.n_val=2", "source.height=32", "source.width=64"]


def _cfg(**source) -> Config:
    cfg = Config()
    return cfg.model_copy(update={"source": cfg.source.model_copy(update=source)})


def test_source_changes_compares_resolved_settings_of_the_train_images():
    built = {"source": {"kind": "synthetic", "preset": "city", "n_train": None, "n_val": None, "height": None,
                        "width": None}, "seed": 0}
    # an explicit preset default (city: 300 × 96×192) is the same train set; n_val is not in the dataset file
    assert source_changes(built, _cfg(n_train=300, height=96, width=192, n_val=7)) == []
    assert source_changes(built, _cfg(n_train=20)) == [("source.n_train", 300, 20)]
    assert source_changes(built, _cfg(preset="voc")) == [
        ("source.preset", "city", "voc"), ("source.n_train", 300, 400), ("source.width", 192, 128)]
    assert source_changes(built, Config(seed=2)) == [("seed", 0, 2)]
    assert source_changes({"labeler": "import"}, _cfg(n_train=20)) == []  # a file that records no source
    real = {"source": {"kind": "folder", "root": "/data/a"}, "seed": 0}
    # a real dataset's root may move; its n_train/seed do not pick images
    assert source_changes(real, _cfg(kind="folder", root="/mnt/a", preset=None, n_train=9)) == []
    assert source_changes(real, _cfg(kind="cityscapes", root="/data/a")) == [("source.kind", "folder", "cityscapes")]


def test_status_says_when_the_config_no_longer_describes_the_dataset(tmp_path, cli):
    ws = tmp_path / "ws"
    for args in (["init"], ["config", "set", *TINY], ["pseudolabel"]):
        code, _, err = cli("-w", ws, *args)
        assert code == 0, err
    for kv in ("source.n_val=3", "source.n_train=4"):  # not the train images / the same value: no change
        code, _, err = cli("-w", ws, "config", "set", kv)
        assert code == 0, err
        code, out, err = cli("-w", ws, "status", "--json")
        assert code == 0 and "changed" not in json.loads(out)["dataset"] and "warning" not in err

    code, _, err = cli("-w", ws, "config", "set", "source.n_train=5")
    assert code == 0, err
    code, out, err = cli("-w", ws, "status", "--json")
    st = json.loads(out)
    assert code == 0 and st["dataset"]["pseudolabel"] == "stale"
    assert "built with source.n_train=4; the config now says source.n_train=5" in st["dataset"]["changed"]
    assert st["next"].endswith(" pseudolabel") and "--force" not in st["next"]  # no round was made from it
    code, out, err = cli("-w", ws, "status")
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(warnings) == 1, err
    back = warnings[0].split("`")[-2]  # the way back the line gives works as written
    assert back.endswith("config set source.n_train=4")
    code, _, err = cli(*shlex.split(back)[1:])
    assert code == 0, err
    code, out, err = cli("-w", ws, "status", "--json")
    assert "changed" not in json.loads(out)["dataset"]

    # another seed after a round was made: the rebuild needs --force, and it clears the line
    code, _, err = cli("-w", ws, "config", "set", "seed=1")
    assert code == 0, err
    (ws / "rounds/r000").mkdir(parents=True)
    code, out, err = cli("-w", ws, "status", "--json")
    st = json.loads(out)
    assert "seed=0" in st["dataset"]["changed"] and st["next"].endswith(" pseudolabel --force")
    code, _, err = cli("-w", ws, "pseudolabel", "--force")
    assert code == 0, err
    with Dataset(ws / "dataset.h5") as ds:
        assert ds.meta["seed"] == 1
    code, out, err = cli("-w", ws, "status", "--json")
    assert code == 0 and "changed" not in json.loads(out)["dataset"] and "pseudolabel" not in json.loads(out)["dataset"]
