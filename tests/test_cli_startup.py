"""Start-up cost: `a2lc --help` and `a2lc status` without models never import torch (issue 20).

Behaviour, not timing: each case runs in a fresh interpreter and reports whether
``torch`` ended up in ``sys.modules`` (importing torch is ~90% of a slow start).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from train_fixture import write_tile_dataset

PROBE = """
import json, sys
from a2lc_cli.cli import invoke
rc = invoke(sys.argv[1:])
print("PROBE " + json.dumps({"rc": rc, "torch": "torch" in sys.modules}))
"""


def _probe(*argv: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, timeout=120)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE "))
    return json.loads(line[len("PROBE "):])


def test_help_does_not_import_torch():
    for argv in (["--help"], ["acquire", "--help"], ["round", "--help"], ["train", "--help"]):  # --model's choices too
        res = _probe(*argv)
        assert res == {"rc": 0, "torch": False}, argv


def test_status_without_models_does_not_import_torch(tmp_path):
    empty = tmp_path / "empty"
    assert _probe("-w", str(empty), "init") == {"rc": 0, "torch": False}
    assert _probe("-w", str(empty), "status", "--json") == {"rc": 0, "torch": False}
    ws, _ = write_tile_dataset(tmp_path, n_train=3, n_val=1)  # a dataset, no model yet
    assert _probe("-w", str(ws.root), "status") == {"rc": 0, "torch": False}
    assert _probe("-w", str(ws.root), "status", "--json") == {"rc": 0, "torch": False}


def test_the_probe_sees_torch_when_a_command_needs_it(tmp_path):
    # the check can fail: a command that loads a model does import torch
    ws, _ = write_tile_dataset(tmp_path, n_train=3, n_val=1)
    res = _probe("-w", str(ws.root), "acquire", "--r", "1")
    assert res["rc"] != 0 and res["torch"] is True  # no θ_0 yet, but the stage module was loaded
