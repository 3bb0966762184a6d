"""The learning-rate tuning table (arca.report.tuning) on a hand-made sample-efficiency table."""

from __future__ import annotations

import math

import pandas as pd

from arca.config import SweepCell, load_config
from arca.report.tuning import setting_name, tuning_markdown, tuning_table


def _eff(rows):
    out = []
    for label, auc, final in rows:
        out.append(
            {
                "label": label,
                "rank": 8,
                "n_seeds": 2,
                "auc_greedy": auc,
                "auc_greedy_lo": auc - 0.1,
                "auc_greedy_hi": auc + 0.1,
                "final_greedy": final,
                "final_greedy_lo": final - 0.1,
                "final_greedy_hi": final + 0.1,
            }
        )
    return pd.DataFrame(out)


def _cfg(tmp_path):
    cfg = load_config("configs/smoke.yaml", [f"paths.results={tmp_path}"])
    cfg.sweep.cells = [
        SweepCell(method="uniform", ranks=[8], label="uniform"),
        SweepCell(method="uniform", ranks=[8], label="uniform_lr1e-2", overrides={"train.lr": 1e-2}),
        SweepCell(method="oracle", ranks=[8], label="oracle_lr1e-4", overrides={"train.lr": 1e-4}),
        SweepCell(method="oracle", ranks=[8], label="oracle_lr1e-2", overrides={"train.lr": 1e-2}),
        SweepCell(method="uniform", ranks=[8], label="null", overrides={"train.shuffle_rewards": True}),
    ]
    return cfg


def test_best_lr_per_setting_and_the_ranking(tmp_path):
    cfg = _cfg(tmp_path)
    eff = _eff(
        [
            ("uniform", 0.5, 0.6),
            ("uniform_lr1e-2", 0.7, 0.6),
            ("oracle_lr1e-4", 0.8, 0.9),
            ("oracle_lr1e-2", 0.8, 0.5),  # a tie in AUC: the smaller lr wins
            ("null", 0.2, 0.2),
        ]
    )
    df = tuning_table(cfg, eff)
    best = {r["setting"]: r["lr"] for _, r in df[df["best"]].iterrows()}
    assert best == {"uniform": 1e-2, "oracle": 1e-4, "uniform (train.shuffle_rewards=True)": cfg.train.lr}
    assert math.isclose(df.loc[df["label"] == "uniform", "lr"].item(), cfg.train.lr)  # the default's lr
    md = tuning_markdown(df)
    best, shared = md.split("## Ranking")[1:]
    assert best.index("| 1 | oracle |") < best.index("| 2 | uniform |") < best.index("| 3 | uniform (")
    # at the shared lr: uniform (0.5) before the null (0.2); the oracle never ran at it
    assert shared.index("| 1 | uniform | 8 |") < shared.index("| 2 | uniform (") and "oracle" not in shared
    assert df["shared"].sum() == 2


def test_setting_name_leaves_out_only_the_lr():
    assert setting_name("arca", {"train.lr": 1e-3}) == "arca"
    assert setting_name("arca", {"train.lr": 1e-3, "credit.sharpen": 1.0}) == "arca (credit.sharpen=1.0)"
