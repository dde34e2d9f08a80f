"""``torchrun --nproc_per_node 2 a2lc train``: DistributedDataParallel on the CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from a2lc_cli.training import batch_indices
from train_fixture import write_tile_dataset


@pytest.mark.slow
def test_torchrun_two_processes_split_the_data_and_rank0_saves(tmp_path):
    ws, cfg = write_tile_dataset(tmp_path, n_train=10, n_val=2)
    debug = tmp_path / "debug"
    env = {**os.environ, "A2LC_DEBUG_SAMPLES": str(debug), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "a2lc_cli", "-q", "-w", str(ws.root), "train", "--round", "0", "--iterations", "6",
           "--batch-size", "4", "--crop", "16", "--device", "cpu", "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # only rank 0 prints
    assert summary["world_size"] == 2 and summary["iterations"] == 6

    ranks = [json.loads((debug / f"rank{k}-samples.json").read_text()) for k in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    for it in range(6):
        a, b = ranks[0]["indices"][it], ranks[1]["indices"][it]
        assert len(a) == len(b) == 2
        assert not set(a) & set(b)  # different data on each rank
        assert a + b == batch_indices(10, 4, cfg.seed, 0, it).tolist()  # together: the global batch

    saved = torch.load(ws.artifact(0, "model.pt"), weights_only=True)["state_dict"]
    w0 = torch.load(debug / "rank0-weights.pt", weights_only=True)
    w1 = torch.load(debug / "rank1-weights.pt", weights_only=True)
    assert saved.keys() == w0.keys()
    for k in saved:
        assert torch.equal(saved[k], w0[k]), k
    params = [k for k in saved if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    for k in params:  # DDP keeps the parameters identical on every rank
        assert torch.allclose(w0[k], w1[k], atol=1e-6), k
    assert not any(np.allclose(saved[k].numpy(), 0) for k in params if saved[k].ndim == 4)
    assert not (ws.root / ".lock").exists()


def _acquire_arrays(path):
    import h5py

    with h5py.File(path, "r") as f:
        arrays = {name: f[name][()] for name in f.keys()}
        meta = json.loads(f.attrs["meta"])
    meta.pop("seconds")
    return arrays, meta


@pytest.mark.slow
def test_torchrun_acquire_shards_images_and_matches_one_process(tmp_path):
    from a2lc_cli.models import build_model
    from a2lc_cli.state import Dataset
    from a2lc_cli.training import save_model

    ws, cfg = write_tile_dataset(tmp_path, n_train=10, n_val=2)
    with Dataset(ws.dataset_path) as ds:
        names = list(ds.classes.names)
    torch.manual_seed(0)
    ws.artifact(0, "model.pt").parent.mkdir(parents=True, exist_ok=True)
    save_model(ws.artifact(0, "model.pt"), build_model("tiny", len(names)), model_name="tiny", class_names=names, round=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    args = ["-m", "a2lc_cli", "-q", "-w", str(ws.root), "acquire", "--round", "1", "--batch-size", "3", "--device", "cpu",
            "--json"]
    one = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    out = ws.artifact(1, "acquire.h5")
    ref_arrays, ref_meta = _acquire_arrays(out)
    out.unlink()

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # only rank 0 prints
    assert summary["ranks"] == 2 and summary["masks"] == len(ref_arrays["score"])
    arrays, meta = _acquire_arrays(out)
    assert meta == ref_meta
    assert arrays.keys() == ref_arrays.keys()
    for name in arrays:  # bitwise the same statistics and scores as one process
        assert arrays[name].dtype == ref_arrays[name].dtype, name
        np.testing.assert_array_equal(arrays[name], ref_arrays[name], err_msg=name)
    assert np.isfinite(arrays["score"]).all() and arrays["score"].std() > 0
    assert not (out.parent / ".acquire-shards").exists()  # shards removed once merged
    assert not (ws.root / ".lock").exists()
