"""The learning-rate tuning table: every method's held-out AUC and final greedy accuracy at each
learning rate the sweep runs it at, and its best learning rate.

A sweep tunes when it runs one setting (credit method, rank and any other overrides) at several
``train.lr`` values, one cell per value (``configs/tune.yaml``); any other sweep gives one row per
cell, with its single lr marked best. The best lr of a setting is the one with the highest mean
area under the held-out greedy curve (ties go to the smaller lr). Reads the sample-efficiency table
and the sweep's resolved configs only.
"""

from __future__ import annotations

import pandas as pd

from arca.config import Config, for_run, make_run_id
from arca.report.render import ci_columns, est, fmt_rank, markdown_table

TUNING_COLUMNS = [
    "setting",
    "method",
    "rank",
    "lr",
    "label",
    "n_seeds",
    "auc_greedy",
    "auc_greedy_lo",
    "auc_greedy_hi",
    "final_greedy",
    "final_greedy_lo",
    "final_greedy_hi",
    "best",
    "shared",
]


def setting_name(method: str, overrides: dict) -> str:
    """A method plus every override but the lr: ``uniform``, ``uniform (train.shuffle_rewards=True)``."""
    rest = {k: v for k, v in sorted(overrides.items()) if k != "train.lr"}
    return method + (" (" + ", ".join(f"{k}={v}" for k, v in rest.items()) + ")" if rest else "")


def tuning_table(cfg: Config, efficiency: pd.DataFrame) -> pd.DataFrame:
    """One row per cell of ``efficiency`` (the sample-efficiency table): its setting, lr, AUC and
    final greedy accuracy, ``best`` on the best lr of each (setting, rank), ``shared`` on the
    config's own ``train.lr``."""
    cells = {c.name: c for c in cfg.sweep.cells}
    rows = []
    for _, r in efficiency.iterrows():
        cell = cells[r["label"]]
        run = make_run_id(cell.name, int(r["rank"]), cfg.sweep.seeds[0])
        rows.append(
            {
                "setting": setting_name(cell.method, cell.overrides),
                "method": cell.method,
                "rank": int(r["rank"]),
                "lr": for_run(cfg, run).train.lr,
                "label": cell.name,
                "n_seeds": r["n_seeds"],
                **ci_columns("auc_greedy", est(r, "auc_greedy")),
                **ci_columns("final_greedy", est(r, "final_greedy")),
            }
        )
    df = pd.DataFrame(rows, columns=TUNING_COLUMNS[:-2])
    df["best"] = False
    df["shared"] = df["lr"] == cfg.train.lr  # the config's own lr, every method's in the default sweep
    for _, group in df.groupby(["setting", "rank"], sort=False):
        ranked = group.dropna(subset=["auc_greedy"]).sort_values(["auc_greedy", "lr"], ascending=[False, True])
        if not ranked.empty:
            df.loc[ranked.index[0], "best"] = True
    return df.sort_values(["setting", "rank", "lr"], kind="stable").reset_index(drop=True)


def tuning_markdown(df: pd.DataFrame) -> str:
    """Per setting and rank, a row per lr; then the ranking of the settings at their best lr."""
    rows = [
        [
            r["setting"],
            fmt_rank(r["rank"]),
            f"{r['lr']:g}",
            str(r["n_seeds"]),
            est(r, "auc_greedy").fmt(),
            est(r, "final_greedy").fmt(),
            "best" if r["best"] else "",
        ]
        for _, r in df.iterrows()
    ]

    def ranking(rows: pd.DataFrame) -> list[list[str]]:
        rows = rows.sort_values("auc_greedy", ascending=False, kind="stable")
        return [
            [str(i + 1), r["setting"], fmt_rank(r["rank"]), f"{r['lr']:g}", est(r, "auc_greedy").fmt()]
            for i, (_, r) in enumerate(rows.iterrows())
        ]

    shared = df.loc[df["shared"], "lr"]
    return "\n".join(
        [
            "# Learning-rate tuning\n",
            "Held-out greedy accuracy: AUC = area under the learning curve divided by its step span; final = at the "
            "last curve step. Mean [95% bootstrap interval over seeds and problems]. Best: the lr with the highest "
            "mean AUC for that setting and rank.\n",
            markdown_table(["setting", "r", "lr", "seeds", "AUC greedy", "final greedy", ""], rows),
            "## Ranking at each setting's best lr (by AUC)\n",
            markdown_table(["#", "setting", "r", "best lr", "AUC greedy"], ranking(df[df["best"]])),
            f"## Ranking at the shared lr ({shared.iloc[0]:g}, every method's in the default sweep)\n"
            if len(shared)
            else "## Ranking at the shared lr\n\nNo cell runs at the config's own `train.lr`.\n",
            markdown_table(["#", "setting", "r", "lr", "AUC greedy"], ranking(df[df["shared"]])) if len(shared) else "",
        ]
    )
