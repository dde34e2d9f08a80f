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
