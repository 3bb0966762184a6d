"""Typed experiment configuration: dataclasses with defaults, YAML loading, dotted overrides.

A config is one or more YAML files deep-merged in order (the way Snakemake merges
``configfile:`` and ``--configfile``), then ``--set a.b=value`` overrides. Every key is checked
against the dataclasses below: unknown keys, wrong types and bad values raise ``ConfigError``
whose message names the dotted key path and the file it came from, before any work starts.

The sweep (methods x ranks x seeds) lives in ``sweep``; ``for_run(cfg, run_id)`` gives the
resolved config of one training cell, and ``run_hash`` fingerprints it so that changing one
method's settings changes only that method's cells.

The package's modules: ``sections`` (the dataclasses, closed sets and run ids), ``loading``
(files, overrides, coercion), ``checks`` (value checks), ``ranges`` (numeric ranges, safe paths)
and ``sweep`` (the sweep's meaning). Everything public is importable from ``arca.config`` itself.
"""

from __future__ import annotations

from arca.config.checks import (  # noqa: F401
    hub_offline,
    is_local_path,
    require_hub,
    validate,
)
from arca.config.loading import (  # noqa: F401
    BASE_KEY,
    FLOAT_STRING,
    apply_overrides,
    base_of,
    check_keys,
    deep_merge,
    did_you_mean,
    dump_config,
    from_dict,
    load_config,
    parse_override,
    read_yaml,
    set_dotted,
)
from arca.config.sections import (  # noqa: F401
    RUN_ID_RE,
    TRAINING_SECTIONS,
    ArcaError,
    Backend,
    Config,
    ConfigError,
    CreditConfig,
    DataConfig,
    DataSource,
    Decoder,
    Device,
    DType,
    EvalConfig,
    ForksConfig,
    InputError,
    LoraConfig,
    MaskRule,
    MissingInputError,
    ModelConfig,
    ModelSource,
    MonitorConfig,
    NonFiniteError,
    Normalization,
    PathsConfig,
    PretrainConfig,
    Protocol,
    ResourcesConfig,
    RolloutConfig,
    SweepCell,
    SweepConfig,
    TrainConfig,
    make_run_id,
    parse_run_id,
    to_dict,
    training_hash,
)
from arca.config.sweep import (  # noqa: F401
    BASE,
    RUN_IDENTITY,
    STEP_COLUMNS,
    cell_of,
    cell_runs,
    check_run_overrides,
    curve_start_hash,
    eval_hash,
    eval_targets,
    for_run,
    heatmap_run,
    run_fixed_keys,
    run_hash,
    run_identity,
    shares_curve_start,
)
