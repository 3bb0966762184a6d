"""``python -m arca scorecard --method pkg.module:signal``: one page on an external credit method.

The method is a signal function (``CreditInputs -> alpha [B, T]``, with an optional ``needs``
attribute) or a ``CreditMethod``, named as ``module:attribute`` or, for an installed package, by
its name in the entry-point group ``arca.credit_methods``. It is registered in
``arca.credit.REGISTRY`` for this process, then the experiment of ``--config`` runs with three
cells, uniform, the first-error oracle and the method, at the uniform cell's ranks and the same
seeds, under its own name ``<name>-scorecard-<method>``: the CLI steps in the DAG's order, in this
process (the registration does not reach other processes). The page, ``scorecard.md`` beside the
experiment's tables, is written from the tables ``aggregate`` writes (``arca.report.leaderboard``).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from argparse import Namespace
from importlib.metadata import entry_points
from pathlib import Path

from arca import credit as credit_lib
from arca.config import BASE, Config, ConfigError, SweepCell
from arca.data import prepare_data
from arca.evaluate import evaluate_main
from arca.io import write_text
from arca.mc_values import mc_values_main
from arca.models import build_base
from arca.paths import paths_of
from arca.probe import probe_main
from arca.report.leaderboard import method_summary, read_tables, scorecard_markdown
from arca.report.tables import aggregate_main
from arca.train import train_main

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "arca.credit_methods"


def as_method(obj) -> credit_lib.CreditMethod:
    """A ``CreditMethod`` as it is, or a signal function with its ``needs`` attribute (default none)."""
    if isinstance(obj, credit_lib.CreditMethod):
        return obj
    if not callable(obj):
        raise ConfigError(f"{obj!r} is neither a credit signal function nor a CreditMethod")
    doc = (obj.__doc__ or "").strip().splitlines()
    return credit_lib.CreditMethod(obj, frozenset(getattr(obj, "needs", ())), doc[0] if doc else "")


def resolve(spec: str) -> tuple[str, credit_lib.CreditMethod]:
    """(registry name, method) of ``module:attribute``, or of a name in the ``arca.credit_methods`` group."""
    if ":" in spec:
        module, _, attr = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"--method {spec}: cannot load it ({e})") from None
        return getattr(obj, "name", attr), as_method(obj)
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
    if found:
        return spec, as_method(found[0].load())
    if spec in credit_lib.REGISTRY:
        return spec, credit_lib.REGISTRY[spec]
    raise ConfigError(
        f"--method {spec}: not module:attribute, not an entry point of group {ENTRY_POINT_GROUP!r}, "
        "and not a registered method"
    )


def register(name: str, method: credit_lib.CreditMethod) -> None:
    """Add ``method`` to the registry under ``name`` (an error if another method has that name)."""
    known = credit_lib.REGISTRY.get(name)
    if known is not None and known.signal is not method.signal:
        raise ConfigError(f"--method: the name {name!r} is already a registered credit method")
    credit_lib.REGISTRY[name] = method


def scorecard_config(cfg: Config, name: str) -> Config:
    """``cfg`` with the three cells (uniform, the ceiling ``credit.CEILING`` where the task has labels,
    ``name``) under its own name."""
    ranks = next((c.ranks for c in cfg.sweep.cells if c.name == "uniform"), None) or [
        max(r for c in cfg.sweep.cells for r in c.ranks)
    ]
    cells = [SweepCell("uniform", list(ranks))]
    if cfg.data.source == "generated" and cfg.data.forks.p_bug > 0:
        cells.append(SweepCell(credit_lib.CEILING, list(ranks)))
    cells.append(SweepCell(name, list(ranks)))
    sweep = dataclasses.replace(cfg.sweep, cells=cells, heatmap_run="")
    return dataclasses.replace(cfg, name=f"{cfg.name}-scorecard-{name}", sweep=sweep)


def run_experiment(cfg: Config) -> None:
    """The DAG's steps for ``cfg`` in order, in this process (finished runs are kept)."""
    prepare_data(cfg, None)
    if not (paths_of(cfg).base / "config.json").is_file():
        build_base(cfg, None)
    p = paths_of(cfg)
    if cfg.eval.every > 0 and cfg.eval.probe_problems > 0:
        probe_main(cfg, Namespace(out=None))
        if cfg.eval.mc_problems > 0 and not p.mc_values.is_file():
            mc_values_main(cfg, Namespace(out=None))
    for run in cfg.run_ids():
        train_main(cfg, Namespace(run=run, force=False))
    for target in [BASE, *cfg.run_ids()]:
        evaluate_main(cfg, Namespace(run=target))
    aggregate_main(cfg, None)


def scorecard_main(cfg: Config, args) -> Path:
    """CLI step: register ``args.method``, run the three cells, write and return the page's path."""
    name, method = resolve(args.method)
    register(name, method)
    sc = scorecard_config(cfg, name)
    credit_lib.check_config(sc, f"scorecard of {name}")
    run_experiment(sc)
    tables = paths_of(sc).tables
    note = f"Experiment `{sc.name}`: seeds {sc.sweep.seeds}, rank(s) {sc.sweep.cells[0].ranks}."
    page = scorecard_markdown(name, method_summary(read_tables(tables)), note)
    out = Path(getattr(args, "out", None) or tables.parent / "scorecard.md")
    write_text(out, page)
    log.info("wrote the scorecard of %s to %s", name, out)
    print(out)
    return out
