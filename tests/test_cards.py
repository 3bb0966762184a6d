"""Tests of arca.cards: the end-of-training metrics an adapter folder records and its model card.

(``base_model_reference`` is tested in test_train.py, ``check_adapter_hash`` in test_overrides.py,
next to the steps that use them.) The card is checked line by line where a reader depends on it:
the metadata block, the numbers of the metric table, and the note on moving a base built here.
"""

from __future__ import annotations

import math

import pytest

from arca.cards import RUN_INFO, adapter_run_info, final_metrics, model_card
from arca.config import for_run, load_config
from arca.paths import paths_of


@pytest.fixture()
def cfg(tmp_path):
    return load_config("configs/smoke.yaml", [f"paths.results={tmp_path}"])


def test_final_metrics_last_step_and_finite_mean():
    metrics = [
        {"step": 0, "reward_mean": 0.25, "gini": 0.1},
        {"step": 1, "reward_mean": None, "gini": math.nan},  # not a number: left out of the mean
        {"step": 2, "reward_mean": 0.75, "gini": 0.3, "loss": 1.0},
    ]
    curve = [{"step": 0, "greedy": 0.1, "sampled": 0.0, "n": 8}, {"step": 2, "greedy": 0.5, "sampled": 0.25, "n": 8}]
    assert final_metrics(metrics, curve) == {
        "last_reward_mean": 0.75,
        "mean_reward_mean": 0.5,
        "last_gini": 0.3,
        "mean_gini": pytest.approx(0.2),
        "curve_step": 2,
        "curve_greedy": 0.5,
        "curve_sampled": 0.25,
        "curve_problems": 8,
    }  # eff_ratio, fallback_frac, decisive_auroc are not in the last step: not on the card
    assert final_metrics([], []) == {}


def _info(**extra) -> dict:
    return {"run": "arca_r8_s1", "config_hash": "0123456789abcdef", "steps": 3, **extra}


def test_model_card_of_a_base_built_here(cfg, tmp_path):
    info = _info(
        trainable_params=1234567,
        final_metrics=final_metrics(
            [{"reward_mean": 0.5, "gini": 0.123456}, {"reward_mean": 0.25, "gini": 0.2}],
            [{"step": 3, "greedy": 0.5, "sampled": 0.375, "n": 16}],
        ),
    )
    card = model_card(cfg, info)
    lines = card.splitlines()
    meta = lines[: lines.index("---", 1) + 1]
    assert meta[0] == "---" and "library_name: peft" in meta and f"- credit-{cfg.credit.method}" in meta
    assert "license: mit" in meta
    assert not any(line.startswith("base_model:") for line in meta)  # a base built here is no Hub reference
    assert str(paths_of(cfg).base.resolve()) not in card and str(tmp_path) not in card  # no absolute path
    assert f"# arca_r8_s1: a LoRA adapter trained with GRPO and `{cfg.credit.method}` token credit" in lines
    assert "| trainable parameters | 1,234,567 |" in lines
    assert "| config hash | `0123456789abcdef` (training sections of `../config.yaml`) |" in lines
    assert "| reward_mean (last step / mean over training) | 0.25 / 0.375 |" in lines
    assert "| gini (last step / mean over training) | 0.2 / 0.1617 |" in lines  # 4 significant digits
    assert "| held-out accuracy at step 3 (16 problems) | greedy 0.5, one sample 0.375 |" in lines
    assert any(line.startswith("| base model | a Qwen3-architecture model pretrained by arca-bench") for line in lines)
    assert "If you move or copy the results folder" in card
    assert "## Limitations" in lines


def test_model_card_loads_with_huggingface_hub_and_carries_the_eval_results(cfg, tmp_path):
    from huggingface_hub import ModelCard

    summary = {
        "protocols": {
            "generated": {
                "primary_grader": "paper",
                "greedy": {"paper": 0.625, "math_verify": 0.6},
                "pass_at_k": {"k": 2, "paper": 0.75, "math_verify": 0.7},
            }
        }
    }
    path = tmp_path / "README.md"
    path.write_text(model_card(cfg, _info(), summary))
    card = ModelCard.load(path)
    assert card.data.library_name == "peft" and card.data.license == "mit"
    assert f"credit-{cfg.credit.method}" in card.data.tags
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {"accuracy": 0.625, "pass@2": 0.75}
    assert "`eval/arca_r8_s1/summary.json`" in card.text


def test_model_card_without_an_evaluation_takes_the_learning_curve(cfg):
    from huggingface_hub import ModelCard

    info = _info(final_metrics={"curve_step": 3, "curve_greedy": 0.5, "curve_sampled": 0.25, "curve_problems": 8})
    card = ModelCard(model_card(cfg, info))
    (result,) = card.data.eval_results
    assert result.metric_value == 0.5 and "step 3" in result.metric_name
    assert "the held-out learning curve" in card.text


def test_model_card_gives_the_exact_prompt_and_an_example_that_uses_it(cfg):
    from arca.prompts import PROMPT_TEMPLATE, build_prompt

    card = model_card(cfg, _info())
    assert "```text\n" + PROMPT_TEMPLATE.format(problem="{problem}").rstrip("\n") + "\n```" in card
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(code.split("model, tok =", 1)[0].split("\n", 3)[-1], namespace)  # the ADAPTER, PROMPT line
    assert namespace["PROMPT"].format(problem="What is 7 + 5?") == build_prompt("What is 7 + 5?")
    assert len([line for line in code.splitlines() if line.startswith(("model, tok", "ids =", "print("))]) == 3


def test_model_card_of_a_hub_base_without_metrics(cfg):
    cfg.model.source, cfg.model.name_or_path = "hub", "Qwen/Qwen3-1.7B-Base"
    card = model_card(cfg, _info())
    assert "base_model: Qwen/Qwen3-1.7B-Base" in card.splitlines()[:8]
    assert "| base model | `Qwen/Qwen3-1.7B-Base` |" in card
    assert "| trainable parameters | - |" in card and "(no metrics recorded)" in card
    assert "(not evaluated yet)" in card
    assert "If you move or copy the results folder" not in card


def test_adapter_run_info_reads_the_record_or_says_to_retrain(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a finished run.*retrain"):
        adapter_run_info(tmp_path)
    (tmp_path / RUN_INFO).write_text('{"run": "uniform_r8_s1", "config_hash": "ab"}')
    assert adapter_run_info(tmp_path) == {"run": "uniform_r8_s1", "config_hash": "ab"}


def test_refresh_card_adds_the_evaluation_and_keeps_the_modification_times(cfg):
    import json
    import os

    from arca.cards import refresh_card

    run = "arca_r4_s1"
    run_cfg = for_run(cfg, run)
    adapter = paths_of(run_cfg).run(run).adapter
    adapter.mkdir(parents=True)
    (adapter / RUN_INFO).write_text(json.dumps(_info(run=run)))
    (adapter / "README.md").write_text(model_card(run_cfg, _info(run=run), summary={}))
    for path in (adapter / "README.md", adapter):
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    with pytest.raises(FileNotFoundError, match="evaluate arca_r4_s1 first"):
        refresh_card(cfg, run)
    summary = {"protocols": {"generated": {"greedy": {"paper": 0.25}, "pass_at_k": {"k": 2, "paper": 0.5}}}}
    paths_of(run_cfg).eval(run).root.mkdir(parents=True)
    (paths_of(run_cfg).eval(run).root / "summary.json").write_text(json.dumps(summary))
    card = refresh_card(cfg, run).read_text()
    assert "From `eval/arca_r4_s1/summary.json`." in card and "| pass@2, held-out" in card
    assert (adapter / "README.md").stat().st_mtime_ns == adapter.stat().st_mtime_ns == 1_000_000_000


class LocalHub:
    """Stands in for huggingface_hub.HfApi: a repository is a folder under ``root``."""

    def __init__(self, root):
        self.root = root

    def create_repo(self, repo_id, private=False, exist_ok=False):
        (self.root / repo_id).mkdir(parents=True, exist_ok=exist_ok)

    def upload_folder(self, folder_path, repo_id, commit_message):
        import shutil

        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)
        return f"uploaded: {commit_message}"


def _finished_adapter(cfg, run):
    import json

    run_cfg = for_run(cfg, run)
    adapter = paths_of(run_cfg).run(run).adapter
    adapter.mkdir(parents=True)
    (adapter / RUN_INFO).write_text(json.dumps(_info(run=run)))
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "README.md").write_text(model_card(run_cfg, _info(run=run), summary={}))
    return adapter


def test_push_uploads_the_adapter_folder_with_a_card_the_hub_reads(cfg, tmp_path):
    from huggingface_hub import ModelCard

    from arca.cards import push_adapter

    cfg.model.source, cfg.model.name_or_path = "hub", "Qwen/Qwen3-0.6B-Base"
    _finished_adapter(cfg, "arca_r4_s1")
    hub = LocalHub(tmp_path / "hub")
    assert push_adapter(cfg, "arca_r4_s1", "me/arca-r4", api=hub) == "uploaded: arca-bench arca_r4_s1"
    pushed = tmp_path / "hub" / "me" / "arca-r4"
    assert (pushed / "adapter_config.json").is_file()
    assert ModelCard.load(pushed / "README.md").data.base_model == "Qwen/Qwen3-0.6B-Base"


def test_push_refuses_a_base_that_is_not_on_the_hub(cfg, tmp_path):
    from arca.cards import push_adapter

    _finished_adapter(cfg, "arca_r4_s1")
    with pytest.raises(ValueError, match="not on the Hub"):
        push_adapter(cfg, "arca_r4_s1", "me/arca-r4", api=LocalHub(tmp_path / "hub"))
    assert not (tmp_path / "hub").exists()
