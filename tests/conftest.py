"""Shared fixtures. Nothing here may reach a model hub."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("A2LC_TEST", "1")

import pytest  # noqa: E402

import a2lc_cli.cli  # noqa: E402,F401 - the whole CLI, imported once

try:
    import torch

    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
except ImportError:  # pragma: no cover
    pass


@pytest.fixture
def stage_inputs(request):
    """What the in-process CLI gives the stages (a2lc_cli.stage_inputs.StageInputs): the fakes of the test's
    crafted workspace when its fixtures include one named ``crafted`` (returning ``(ws, fakes)``,
    tests/support.py), else None (the real source and models)."""
    return request.getfixturevalue("crafted")[1] if "crafted" in request.fixturenames else None


@pytest.fixture
def cli(capsys, stage_inputs):
    """Run the CLI in-process: ``code, out, err = cli("-w", ws, "status", "--json")``; the stages are given
    ``stage_inputs`` (``cli(..., inputs=other)`` for one call), as arguments of :func:`a2lc_cli.cli.invoke`."""
    from a2lc_cli.cli import invoke

    def run(*args: object, inputs=stage_inputs) -> tuple[int, str, str]:
        capsys.readouterr()
        code = invoke([str(a) for a in args], inputs=inputs)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
