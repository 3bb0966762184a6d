"""Monte Carlo ground truth of token credit (arca.mc_values) and the agreement scores (arca.diagnostics)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from arca.diagnostics import mc_agreement, spearman
from arca.mc_values import largest_drop_is_first_error, sample_values
from arca.probe import mc_abs_advantages


def _slow_spearman(a: list[float], b: list[float]) -> float:
    def ranks(x):
        return [sum(y < v for y in x) + (sum(y == v for y in x) + 1) / 2 for v in x]

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return num / den if den else 0.0


def test_spearman_matches_a_slow_reference_with_ties():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        a = torch.randint(0, 4, (9,), generator=g).double()  # many ties
        b = torch.rand(9, generator=g).double()
        assert spearman(a, b) == pytest.approx(_slow_spearman(a.tolist(), b.tolist()), abs=1e-12)
    assert spearman(torch.ones(5), torch.arange(5.0)) == 0.0  # uniform weights rank nothing


def test_mc_agreement_hand_case():
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], dtype=torch.float32)
    w = torch.tensor([[0.1, 0.6, 0.2, 0.1, 0.0], [0.2, 0.3, 0.5, 0.0, 0.0]], dtype=torch.float64)
    a = torch.tensor([[0.0, 0.8, 0.1, 0.0, 0.0], [float("nan")] * 5], dtype=torch.float64)  # row 1: no values
    out = mc_agreement(w, mask, a)
    assert out["mc_rows"] == 1
    assert out["mc_top_share"] == pytest.approx(0.6)  # ceil(0.1 * 4) = 1 token: the 0.8 one
    assert out["mc_top_share_uniform"] == pytest.approx(0.25)
    assert out["mc_spearman"] == pytest.approx(_slow_spearman([0.1, 0.6, 0.2, 0.1], [0.0, 0.8, 0.1, 0.0]))
    flat = mc_agreement(w, mask, torch.zeros(2, 5, dtype=torch.float64))  # no token moved V: nothing to rank
    assert flat["mc_rows"] == 0 and flat["mc_spearman"] is None


def test_largest_drop_names_the_token_holding_the_first_error():
    branches = [
        {"text": "6/2=3. \\boxed{3}", "correct": True, "decisive": [1], "distractor": []},
        {"text": "6*2=12. \\boxed{12}", "correct": False, "decisive": [1], "distractor": []},
    ]
    text = "6*2=12. \\boxed{12}"
    pieces = ["6", "*", "2", "=", "1", "2", ".", " ", "\\boxed{", "1", "2", "}"]
    values = [0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # V_0..V_12: "*" drops it
    assert largest_drop_is_first_error(text, pieces, values, branches) is True
    late = [0.5, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # the drop at "1" instead
    assert largest_drop_is_first_error(text, pieces, late, branches) is False
    assert largest_drop_is_first_error(branches[0]["text"], pieces[:3], [1.0] * 4, branches) is None  # a success


class _ScriptedGenerator:
    """Continues a prompt with the right answer when its prefix holds '/', else with a wrong one."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, sampling):
        n = sampling.n
        self.calls.append((len(prompts), n, sampling.max_new_tokens))
        texts = []
        for p in prompts:
            done = p.split("Q:")[-1]
            for j in range(n):
                if "*" in done:
                    texts.append(" \\boxed{12}")
                elif "/" in done:
                    texts.append(" \\boxed{3}")
                else:  # the decision is still open: half the samples take each branch
                    texts.append("/2=3 \\boxed{3}" if j % 2 == 0 else "*2=12 \\boxed{12}")
        return SimpleNamespace(texts=texts)


def test_sample_values_estimates_the_chance_of_success_from_every_prefix():
    cfg = SimpleNamespace(eval=SimpleNamespace(mc_samples=4, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=10))
    gen = _ScriptedGenerator()
    pieces = [["6", "/", "2"], ["6", "*", "2", "="]]
    values = sample_values(cfg, gen, ["Q:", "Q:"], pieces, ["3", "3"])
    assert values == [[0.5, 0.5, 1.0], [0.5, 0.5, 0.0, 0.0]]  # V_0..V_{L-1}: the decision moves it
    # prefixes of one length go together, each with the budget the original had left
    assert [c[0] for c in gen.calls] == [2, 2, 2, 1] and [c[2] for c in gen.calls] == [10, 9, 8, 7]


def test_mc_abs_advantages_lines_up_with_the_probe_rows():
    rows = [{"problem_id": "p", "sample": 0}, {"problem_id": "p", "sample": 1}]
    a = mc_abs_advantages({("p", 0): [0.5, 0.5, 1.0, 1.0]}, rows, 5)
    assert a.shape == (2, 5)
    assert a[0, :3].tolist() == [0.0, 0.5, 0.0] and all(math.isnan(x) for x in a[0, 3:].tolist())
    assert all(math.isnan(x) for x in a[1].tolist())
    assert mc_abs_advantages({}, rows, 5) is None


def test_agreement_of_a_method_that_follows_the_advantages_beats_uniform():
    mask = torch.ones(1, 6)
    adv = torch.tensor([[0.0, 0.1, 0.7, 0.0, 0.05, 0.0]], dtype=torch.float64)
    follow = mc_agreement(adv + 1e-3, mask, adv)
    flat = mc_agreement(torch.ones(1, 6, dtype=torch.float64), mask, adv)
    assert follow["mc_spearman"] > 0.9 and flat["mc_spearman"] == 0.0
    assert follow["mc_top_share"] > flat["mc_top_share"] == pytest.approx(1 / 6)


def _run(seed: int, own: dict, final: dict | None):
    import pandas as pd

    from arca.report.records import RunRecord

    methods = {"arca": own, "uniform": {"mc_spearman": 0.0, "mc_top_share": 0.1}, "oracle_decisive": own}
    summary = {"credit_precision": {"methods": methods}, "mc_final": final}
    return RunRecord(f"arca_r8_s{seed}", "arca", "arca", 8, seed, summary, pd.DataFrame())


def test_the_agreement_table_scores_final_model_values_only_where_a_seed_has_them():
    from arca.report.mc_agreement import mc_agreement_markdown, mc_agreement_table
    from arca.report.records import Cell

    base = {"mc_spearman": 0.3, "mc_top_share": 0.4, "mc_rows": 8, "mc_top_share_uniform": 0.12}
    first = Cell(
        "arca",
        "arca",
        8,
        [
            _run(
                1, {**base, "mc_final_spearman": 0.5, "mc_final_top_share": 0.6}, {"first_error_is_largest_drop": 0.75}
            ),
            _run(2, base, None),  # the second seed: base-model values only
        ],
    )
    (row,) = mc_agreement_table([first]).to_dict("records")
    assert row["n_final_seeds"] == 1 and row["final_first_error_is_largest_drop"] == 0.75
    assert row["own_mc_final_spearman"] == row["own_mc_final_spearman_lo"] == 0.5  # one seed: no spread
    assert row["own_mc_final_top_share"] == 0.6 and row["own_mc_spearman"] == pytest.approx(0.3)
    text = mc_agreement_markdown(mc_agreement_table([first]), {})
    assert "Under each cell's final models" in text and "| arca | 8 | 1 | 0.500" in text
    none = Cell("arca", "arca", 8, [_run(1, base, None)])
    assert "Under each cell's final models" not in mc_agreement_markdown(mc_agreement_table([none]), {})


def test_final_model_values_go_to_the_first_seeds_of_the_sweep():
    from arca.config import load_config
    from arca.evaluate import final_mc

    cfg = load_config(["configs/default.yaml"], ["eval.mc_final_seeds=2", "sweep.seeds=[3, 1, 2]"])
    assert [s for s in (1, 2, 3, None) if final_mc(cfg, s)] == [1, 3]  # the first two in the sweep's order
    off = load_config(["configs/default.yaml"], ["eval.mc_final_seeds=2", "eval.mc_problems=0"])
    assert not any(final_mc(off, s) for s in off.sweep.seeds)
