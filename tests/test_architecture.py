"""The package's layers: each module imports only from its own layer or below, with no circles.

Read from the source with ``ast`` (imports inside functions count too), so a late import cannot
hide an arrow that goes the wrong way. The layers, bottom to top:

0. ``config``: knows no other module of the package (``arca`` itself holds only the version);
   ``paths`` (every output path of an experiment) beside it, knowing only ``config``.
1. ``io`` (atomic writes).
2. Pure functions on tensors and records: credit, grpo, diagnostics, grading, prompts, data,
   labels, stats, cards (what an adapter folder records), optimizer (the one AdamW factory),
   sampling (the settings of one ``generate`` call).
3. Model passes and sampling: scoring, models, pretrain, rollout and its backends.
4. Steps: train (with run_files, its run folder), evaluate, probe, analysis, bench, smoke.
5. ``report``: reads result files only, never a model.
6. ``cli`` and ``__main__``.
7. The Snakemake adapter (``snakerules``, ``snakeconfig``): what only the Snakefile needs. Nothing
   in the package imports it; a step or the report that did would run differently under the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "arca"

LAYERS = {
    "arca": 0,
    "arca.config": 0,  # the package itself holds only its version
    "arca.paths": 0,
    "arca.io": 1,
    "arca.credit": 2,
    "arca.credit_literature": 2,
    "arca.grpo": 2,
    "arca.diagnostics": 2,
    "arca.grading": 2,
    "arca.math_verify_pool": 2,
    "arca.prompts": 2,
    "arca.data": 2,
    "arca.labels": 2,
    "arca.stats": 2,
    "arca.cards": 2,
    "arca.optimizer": 2,
    "arca.sampling": 2,
    "arca.scoring": 3,
    "arca.models": 3,
    "arca.pretrain": 3,
    "arca.rollout": 3,
    "arca.vllm_backend": 3,
    "arca.decode": 3,
    "arca.backends": 3,
    "arca.train": 4,
    "arca.run_files": 4,
    "arca.evaluate": 4,
    "arca.learning_curve": 4,
    "arca.probe": 4,
    "arca.mc_values": 4,
    "arca.credit_passes": 4,
    "arca.trl_credit": 4,
    "arca.heatmap_rollouts": 4,
    "arca.bench": 4,
    "arca.smoke": 4,
    "arca.report": 5,
    "arca.cli": 6,
    "arca.scorecard": 6,
    "arca.__main__": 6,
    "arca.snakerules": 7,
    "arca.snakeconfig": 7,
}
SNAKEMAKE_ADAPTER = {"arca.snakerules", "arca.snakeconfig"}
# What runs a model: the report must import none of it, not even in a function.
RUNS_A_MODEL = {name for name, layer in LAYERS.items() if layer in (3, 4)}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> int:
    """The layer of a module: its own entry, else its package's (``arca.data.forks`` -> ``arca.data``)."""
    while name not in LAYERS:
        if "." not in name:
            raise KeyError(name)
        name = name.rsplit(".", 1)[0]
    return LAYERS[name]


def imports_of(path: Path) -> set[str]:
    """Every ``arca`` module a source file imports, at the top or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "arca"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "arca":
            # `from arca import credit` imports the module arca.credit
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(
                    sub
                    if (SRC.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                    or (SRC.parent / Path(*sub.split(".")) / "__init__.py").exists()
                    else node.module
                )
    return out


GRAPH = {module_name(p): imports_of(p) for p in sorted(SRC.rglob("*.py"))}


def test_every_module_has_a_layer():
    unplaced = []
    for name in GRAPH:
        try:
            layer_of(name)
        except KeyError:
            unplaced.append(name)
    assert not unplaced, f"place these modules in a layer (tests/test_architecture.py): {unplaced}"


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_go_down_or_sideways(name):
    upward = sorted(dep for dep in GRAPH[name] if layer_of(dep) > layer_of(name))
    assert not upward, f"{name} (layer {layer_of(name)}) imports from a higher layer: " + ", ".join(
        f"{d} (layer {layer_of(d)})" for d in upward
    )


def test_paths_knows_only_config():
    assert {d for d in GRAPH["arca.paths"] if d != "arca"} <= {n for n in GRAPH if n.startswith("arca.config")}


def test_config_knows_no_other_module():
    inside = {name for name in GRAPH if name == "arca.config" or name.startswith("arca.config.")}
    assert len(inside) > 1  # the package and its modules are all read
    for name in inside:
        assert GRAPH[name] <= inside, f"{name} imports {sorted(GRAPH[name] - inside)}"


def test_report_never_imports_what_runs_a_model():
    offenders = {
        name: sorted(d for d in deps if layer_of(d) in (3, 4))
        for name, deps in GRAPH.items()
        if name.startswith("arca.report")
    }
    assert not any(offenders.values()), offenders


def test_nothing_but_the_adapter_imports_the_adapter():
    # The steps, the credit methods and the report take paths from arca.paths and the sweep's
    # meaning from arca.config; the Snakefile alone reads arca.snakerules and arca.snakeconfig.
    users = {name: sorted(deps & SNAKEMAKE_ADAPTER) for name, deps in GRAPH.items() if name not in SNAKEMAKE_ADAPTER}
    assert not any(users.values()), {n: d for n, d in users.items() if d}
    for name in ("arca.credit", "arca.train", "arca.evaluate", "arca.report.tables", "arca.report.records"):
        assert name in GRAPH


def test_no_import_cycles():
    # Depth-first search over module -> imported module edges (the package itself excluded:
    # `import arca.x` names the package, which imports nothing).
    edges = {n: {d for d in deps if d in GRAPH and d != "arca"} for n, deps in GRAPH.items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    cycles = []

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for d in sorted(edges[n]):
            if state.get(d) == 1:
                cycles.append(path[path.index(d) :] + [d] if d in path else [n, d])
            elif d not in state:
                visit(d, path + [d])
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


MAX_FUNCTION_LINES = 60


def long_functions(path: Path) -> list[tuple[str, int]]:
    """``(name, lines)`` of every function of a file longer than ``MAX_FUNCTION_LINES``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def test_functions_stay_short():
    long = {module_name(p): long_functions(p) for p in sorted(SRC.rglob("*.py"))}
    assert not {m: f for m, f in long.items() if f}, "split these functions into named parts"


def test_the_length_checker_counts_lines(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES + "\n\ndef g():\n    pass\n")
    assert long_functions(f) == [("f", MAX_FUNCTION_LINES + 1)]


TESTS = Path(__file__).resolve().parent


def test_no_test_module_imports_another():
    # Shared builders live in tests/helpers.py; a test module that imports another runs its tests' set-up.
    offenders = {}
    for path in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad = [n for n in names if n.split(".")[0].startswith("test_") or n.split(".")[0] == "conftest"]
            if bad:
                offenders.setdefault(path.name, []).extend(bad)
    assert not offenders, offenders


def test_the_checker_sees_late_imports(tmp_path):
    # the rules above have teeth: an import inside a function is found like a top-level one
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from arca.train import train_step\n    import arca.models\n")
    assert imports_of(f) == {"arca.train", "arca.models"}
