"""The cost table (arca.report.cost): Snakemake's benchmark records gathered per run and per cell."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from arca.config import load_config
from arca.paths import paths_of
from arca.report.cost import COLUMNS, cost_rows, cost_table, read_benchmark

REPO = Path(__file__).resolve().parents[1]
# The header Snakemake 9 writes; one line per repeat of the job.
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path: str | Path, *lines: tuple[str, str]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(HEADER + "".join(f"{s}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t1.0\n" for s, rss in lines))


def test_read_benchmark_mean_time_largest_peak_and_gaps(tmp_path):
    _bench(tmp_path / "a.tsv", ("2.0", "100.5"), ("4.0", "300.25"))
    assert read_benchmark(tmp_path / "a.tsv") == (3.0, 300.25)
    _bench(tmp_path / "na.tsv", ("0.4", "NA"))  # a job too short for a memory sample
    wall, rss = read_benchmark(tmp_path / "na.tsv")
    assert wall == 0.4 and math.isnan(rss)
    assert all(math.isnan(v) for v in read_benchmark(tmp_path / "absent.tsv"))
    (tmp_path / "bad.tsv").write_text("seconds\tmemory\n1\t2\n")
    with pytest.raises(ValueError, match=r"bad\.tsv.*max_rss, s"):
        read_benchmark(tmp_path / "bad.tsv")


@pytest.fixture
def cfg(tmp_path):
    cells = "sweep.cells=[{method: uniform, ranks: [4]}, {method: arca, ranks: [2, 4]}]"
    return load_config(REPO / "configs" / "smoke.yaml", [f"paths.results={tmp_path}", cells, "sweep.seeds=[1, 2]"])


def test_cost_table_rows_per_run_and_cells(cfg):
    _bench(paths_of(cfg).benchmark("build_base"), ("120.0", "900"))
    _bench(paths_of(cfg).benchmark("mc_values"), ("40.0", "600"))
    _bench(paths_of(cfg).benchmark("evaluate", "base"), ("10.0", "800"))
    for i, run in enumerate(cfg.run_ids()):
        _bench(paths_of(cfg).benchmark("train", run), (f"{30 + i}", f"{1000 + i}"))
    # one evaluation job per cell, its seconds shared among the cell's seeds; arca r4 evaluated by hand: no record
    _bench(paths_of(cfg).benchmark("evaluate", "uniform_r4"), ("10.0", "700"))
    _bench(paths_of(cfg).benchmark("evaluate", "arca_r2"), ("12.0", "750"))
    df = cost_table(cfg)
    assert list(df.columns) == COLUMNS
    assert list(df["run"]) == ["base", *cfg.run_ids()]
    base = df.iloc[0]
    assert (base["build_base_s"], base["build_base_max_rss_mb"], base["evaluate_s"]) == (120.0, 900.0, 10.0)
    assert base["mc_values_s"] == 40.0 and math.isnan(df.iloc[1]["mc_values_s"])
    assert math.isnan(base["train_s"]) and base["rank"] is pd.NA
    row = df.set_index("run").loc["arca_r2_s1"]
    assert (row["label"], row["method"], row["rank"], row["seed"]) == ("arca", "arca", 2, 1)
    assert math.isnan(row["build_base_s"]) and row["train_s"] == 30 + cfg.run_ids().index("arca_r2_s1")
    assert math.isnan(df.set_index("run").loc["arca_r4_s2"]["evaluate_s"])
    assert list(df.set_index("run").loc[["arca_r2_s1", "arca_r2_s2"], "evaluate_s"]) == [6.0, 6.0]
    assert df.set_index("run").loc["uniform_r4_s2", "evaluate_max_rss_mb"] == 700.0

    headers, rows = cost_rows(cfg, df)
    assert headers == [
        "cell",
        "jobs",
        "build_base s",
        "build_base max RSS MB",
        "mc_values s",
        "mc_values max RSS MB",
        "train s",
        "train max RSS MB",
        "evaluate s",
        "evaluate max RSS MB",
    ]
    by_cell = {r[0]: r for r in rows}
    assert [r[0] for r in rows] == ["base model", "uniform r4", "arca r2", "arca r4", "total"]
    ids = cfg.run_ids()
    i1, i2 = ids.index("arca_r4_s1"), ids.index("arca_r4_s2")
    # mean seconds and largest peak over the seeds; the evaluation without a record is left out
    assert by_cell["arca r4"] == [
        "arca r4",
        "2",
        "",
        "",
        "",
        "",
        f"{30 + (i1 + i2) / 2:.1f}",
        str(1000 + max(i1, i2)),
        "",
        "",
    ]
    assert by_cell["arca r2"][-2:] == ["6.0", "750"]
    total_train = sum(30 + i for i in range(len(ids)))
    assert by_cell["total"][:7] == ["total", str(1 + len(ids)), "120.0", "900", "40.0", "600", f"{total_train:.1f}"]
    assert by_cell["total"][8] == f"{10.0 + 10.0 + 12.0:.1f}"  # the jobs' seconds: base, uniform r4, arca r2


def test_cost_table_without_any_record_is_empty_not_an_error(cfg):
    df = cost_table(cfg)
    assert len(df) == 1 + len(cfg.run_ids())
    assert df[[c for c in COLUMNS if c.endswith(("_s", "_mb"))]].isna().all().all()
    _, rows = cost_rows(cfg, df)
    assert all(cell == "" for row in rows for cell in row[2:])
