"""Thread policy per stage (a2lc_cli/threads.py): config > OMP_NUM_THREADS > the stage's default."""

from __future__ import annotations

import pytest
import torch

from a2lc_cli.config import Config, set_option
from a2lc_cli.errors import A2LCError
from a2lc_cli.threads import stage_thread_count, stage_threads


def test_defaults_without_omp(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cfg = Config()
    assert stage_thread_count("lcm-train", cfg) == 1
    assert stage_thread_count("lcm-correct", cfg) == 1
    # acquire and evaluate follow the recipe the model was trained with (tiny: 1, DeepLab: torch's default)
    assert stage_thread_count("acquire", cfg, model_threads=1) == 1
    assert stage_thread_count("evaluate", cfg, model_threads=None) is None
    assert stage_thread_count("lcm-train", cfg, device_type="cuda") is None


def test_omp_num_threads_wins_over_defaults_and_config_over_both(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    cfg = Config()
    assert stage_thread_count("lcm-train", cfg) is None
    assert stage_thread_count("acquire", cfg, model_threads=1) is None
    cfg = set_option(cfg, "threads.lcm_train", "2")
    cfg = set_option(cfg, "threads.acquire", "3")
    assert stage_thread_count("lcm-train", cfg) == 2
    assert stage_thread_count("acquire", cfg, model_threads=1) == 3
    assert stage_thread_count("lcm-correct", cfg) is None


def test_stage_threads_sets_and_restores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    cfg = set_option(Config(), "threads.evaluate", str(before + 1))
    with stage_threads("evaluate", cfg):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_bad_thread_counts_are_config_errors():
    with pytest.raises(A2LCError):
        set_option(Config(), "threads.acquire", "0")
    with pytest.raises(A2LCError):
        set_option(Config(), "threads.query", "1")


def test_environment_while_training_does_not_change_later_stages(monkeypatch):
    """OMP_NUM_THREADS at training time decides training's threads only: the recipe saved in model.pt
    keeps the tiny model's 1, so acquire/evaluate run without the variable get 1 thread (not torch's
    default), and a resume is not refused because the variable changed."""
    from a2lc_cli.training import _results_recipe, resolve_recipe, training_threads

    cfg = Config()  # the built-in benchmark, tiny model: recipe threads 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with_env = resolve_recipe(cfg)
    assert with_env.threads == 1 and training_threads(cfg, with_env) is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    without = resolve_recipe(cfg)
    assert without == with_env and training_threads(cfg, without) == 1
    assert stage_thread_count("acquire", cfg, model_threads=with_env.threads) == 1
    cfg2 = set_option(cfg, "train.threads", "2")  # the config wins over both
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert training_threads(cfg2, resolve_recipe(cfg2)) == 2
    from dataclasses import asdict

    a, b = asdict(without), {**asdict(without), "threads": None}
    assert _results_recipe(a) == _results_recipe(b) and _results_recipe({**a, "lr": 9.0}) != _results_recipe(b)
