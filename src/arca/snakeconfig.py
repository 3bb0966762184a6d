"""How Snakemake's config reaches the Python steps.

Snakemake merges ``configfile:`` (configs/default.yaml) first, then every ``--configfile`` in
command-line order, then ``--config key=value``. ``config_files(workflow)`` returns the files in
that same order (``workflow.configfiles`` lists the command-line files first and the
``configfile:`` files after them, so it is reordered here) and ``config_args`` turns them, plus the
``--config`` values as ``--set key=json``, into the argument string every rule passes to
``python -m arca`` through ``config_param``. One ``--config`` entry is special:
``set=train.lr=1e-4`` (or ``set='[a.b=1, c.d=2]'``) holds ``--set`` overrides verbatim, because
Snakemake itself accepts no dotted key; ``apply_set`` applies it before the DAG is planned.
``arca.config.load_config`` merges them exactly like Snakemake did, so the step sees the same
config the DAG was planned from.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from arca.config import (
    BASE_KEY,
    Config,
    ConfigError,
    apply_overrides,
    base_of,
    check_keys,
    check_run_overrides,
    from_dict,
    parse_override,
    read_yaml,
    set_dotted,
)
from arca.snakerules import as_config


def config_files(workflow: Any) -> list[str]:
    """The config files Snakemake merged, in merge order (``configfile:`` first, then CLI).

    ``workflow.configfiles`` holds the ``--configfile`` paths (made absolute by Snakemake) followed
    by the paths of ``configfile:`` directives that existed; ``workflow.overwrite_configfiles``
    holds only the former. With ``--replace-workflow-config`` Snakemake drops the directive's
    content, so its files are dropped here too.
    """
    cli = [str(p) for p in (workflow.overwrite_configfiles or [])]
    every = [str(p) for p in workflow.configfiles]
    directive = every[len(cli) :]
    if getattr(workflow.config_settings, "replace_workflow_config", False):
        directive = []
    return [_short_path(p) for p in directive + cli]


def _short_path(path: str) -> str:
    """Relative to the working directory when inside it: keeps shell commands and logs readable."""
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.extend(_flatten(value, f"{path}."))
        else:
            out.append((path, value))
    return out


SET_KEY = "set"  # `snakemake --config set=train.lr=1e-4` or set='[train.lr=1e-4, credit.sharpen=1.0]'


def set_entries(overrides: Mapping[str, Any] | None) -> list[str]:
    """The ``key.path=value`` strings of the ``set`` entry of Snakemake's ``--config`` dict.

    One string or a list of them; anything else is a ``ConfigError``. Each is checked like ``--set``.
    """
    value = (overrides or {}).get(SET_KEY)
    if value is None:
        return []
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ConfigError(
            f"--config {SET_KEY}=...: expected key.path=value or a list of them, "
            f"e.g. {SET_KEY}='[train.lr=1e-4, credit.sharpen=1.0]', got {value!r}"
        )
    for e in entries:
        parse_override(e, f"--config {SET_KEY}")
    return list(entries)


def cli_overrides(overrides: Mapping[str, Any] | None) -> list[str]:
    """Snakemake's ``--config`` dict as ``key.path=value`` overrides, in the order they apply.

    Ordinary entries (``--config name=x``) are nested dicts that Snakemake merged key by key, so
    they become one dotted entry per leaf, the value written as JSON (which reads back as YAML
    with its type); the ``set`` entries follow, verbatim.
    """
    plain = {k: v for k, v in (overrides or {}).items() if k != SET_KEY}
    return [f"{key}={json.dumps(value)}" for key, value in _flatten(plain)] + set_entries(overrides)


def _typed(value: Any) -> Any:
    """A leaf of a nested ``--config`` value with its YAML type: Snakemake reads ``train={steps: 2}``
    with YAML's base loader, which leaves every leaf a string."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, str):
        import yaml

        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return parsed if parsed is None or isinstance(parsed, (bool, int, float)) else value
    return value


def type_nested_values(config: dict, cli: dict) -> None:
    """Give the leaves of nested ``--config`` values (``train={steps: 2}``) their YAML types, in
    Snakemake's ``--config`` dict ``cli`` and in the merged ``config``, both in place."""
    for key, value in list(cli.items()):
        if key == SET_KEY or not isinstance(value, dict):
            continue
        cli[key] = _typed(value)
        for path, leaf in _flatten(cli[key], f"{key}."):
            set_dotted(config, path, leaf, source="--config")


def apply_set(config: dict) -> list[str]:
    """Apply (in place) and remove the ``set`` entry of Snakemake's merged ``config``; return it.

    The Snakefile calls this before validating, so the DAG is planned from the overridden config
    and the config check never sees a ``set`` key.
    """
    entries = set_entries(config)
    config.pop(SET_KEY, None)
    overridden = apply_overrides(dict(config), entries, source=f"--config {SET_KEY}")
    config.clear()
    config.update(overridden)
    return entries


def check_overrides(config: Mapping[str, Any] | Config, overrides: Iterable[str]) -> None:
    """Refuse command-line overrides of a key that some run id of the sweep fixes (method, rank,
    seed, a cell's overrides): ``for_run`` would replace them without a word."""
    cfg = as_config(config)
    overrides = list(overrides)
    if overrides:
        for run in cfg.run_ids():
            check_run_overrides(cfg, run, overrides, source="--config")


def config_args(files: Iterable[str], overrides: Mapping[str, Any] | None = None) -> str:
    """``--config F1 --config F2 ... --set k=v`` for ``python -m arca``, shell-quoted.

    ``overrides`` is Snakemake's ``--config`` dict, turned into ``--set`` by ``cli_overrides``.
    """
    parts = []
    for f in files:
        parts += ["--config", f]
    for entry in cli_overrides(overrides):
        parts += ["--set", entry]
    return " ".join(shlex.quote(p) for p in parts)


def config_param(args: str) -> Callable[[Any, Any], str]:
    """``args`` (``config_args``) as a rule's params function, so shell commands read it as ``{params.config}``.

    The function takes the job's ``output``, which makes it a *derived* param: Snakemake leaves such
    params out of its rerun triggers. Which files carry the config is how it is delivered, not what
    a job computes, so handing the same settings over in another list of files reruns nothing; what
    a job depends on is in its own params (a training run's ``run_hash``, the evaluations' ``eval_hash``).
    """

    def config(wildcards: Any, output: Any) -> str:  # the arguments are Snakemake's; only their names matter
        return args

    return config


def _cli_config(workflow: Any) -> dict:
    return dict(workflow.config_settings.config or {})


def config_source(workflow: Any) -> str:
    """Where Snakemake's config came from, for error messages: the files, then the ``--config`` values."""
    parts = config_files(workflow)
    parts += [f"--config {key}={json.dumps(value)}" for key, value in _cli_config(workflow).items()]
    return " + ".join(parts) or "the dataclass defaults"


def config_layers(workflow: Any) -> list[tuple[str, dict]]:
    """Each layer of Snakemake's config as (where it came from, its content): the files in merge
    order, then each ``--config`` value and each ``set=`` entry."""
    layers = [(path, read_yaml(Path(path))) for path in config_files(workflow)]
    cli = _cli_config(workflow)
    layers += [(f"--config {key}={json.dumps(value)}", {key: value}) for key, value in cli.items() if key != SET_KEY]
    for entry in set_entries(cli):
        layer: dict = {}
        set_dotted(layer, *parse_override(entry, f"--config {SET_KEY}"), source=f"--config {SET_KEY}")
        layers.append((f"--config {SET_KEY}={entry}", layer))
    return layers


def checked_config(workflow: Any, config: Mapping[str, Any]) -> Config:
    """Snakemake's merged ``config`` as a validated ``Config``.

    Each config file and each ``--config`` value is checked on its own first, so that a key or
    type error names the one it came from; a value error names them all.
    """
    files = config_files(workflow)
    for i, path in enumerate(files):
        base = base_of(Path(path))
        if base is not None and not any(Path(f).resolve() == base.resolve() for f in files[:i]):
            raise ConfigError(
                f"{path}: key '{BASE_KEY}' names {base}, which Snakemake does not merge before it: "
                f"pass it with --configfile before {path}"
            )
    for source, layer in config_layers(workflow):
        check_keys(layer, source)
    # Snakemake merged each file as written: a file's `base:` key is no config value.
    plain = {k: v for k, v in dict(config).items() if k != BASE_KEY}
    return from_dict(json.loads(json.dumps(plain)), source=config_source(workflow))


def fail(error: Exception) -> None:
    """End the Snakefile with the error's one message and no traceback."""
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(1)


def report_command(workflow: Any, path: str | Path) -> list[str]:
    """``snakemake --report PATH`` for the DAG this Snakemake run planned: the same Snakefile,
    ``--configfile`` files and ``--config`` values; ``--nolock`` because the run still holds the lock."""
    cmd = [sys.executable, "-m", "snakemake", "--report", str(path), "--nolock"]
    cmd += ["--snakefile", str(workflow.main_snakefile)]
    cli_files = [_short_path(str(p)) for p in (workflow.overwrite_configfiles or [])]
    if cli_files:
        cmd += ["--configfile", *cli_files]
    cli = _cli_config(workflow)
    if cli:
        cmd += ["--config", *[f"{key}={json.dumps(value)}" for key, value in cli.items()]]
    return cmd


def build_report(workflow: Any, path: str | Path) -> Path | None:
    """Write Snakemake's HTML report to ``path``; None (and a warning) when Snakemake could not."""
    import subprocess

    proc = subprocess.run(report_command(workflow, path), capture_output=True, text=True)
    if proc.returncode != 0 or not Path(path).is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        print(f"warning: the HTML report was not written ({path}):\n{tail}", file=sys.stderr)
        return None
    return Path(path)
