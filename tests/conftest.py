"""Shared fixtures. Nothing here may reach a model hub."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("A2LC_TEST", "1")

import pytest  # noqa: E402

# Import the whole CLI once, before any test monkeypatches a module attribute: modules that do
# `from .data import open_source` at import time would otherwise keep a test's fake for good.
import a2lc_cli.cli  # noqa: E402,F401

try:
    import torch

    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
except ImportError:  # pragma: no cover
    pass


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: ``code, out, err = cli("-w", ws, "status", "--json")``."""
    from a2lc_cli.cli import invoke

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        code = invoke([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
