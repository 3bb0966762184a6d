# ARCA reproduction: the DAG at a glance. Declarations only; every decision is in src/arca/grid.py.
#   snakemake --cores all                                  # configs/default.yaml
#   snakemake --cores all --configfile configs/smoke.yaml  # any file in configs/, layered on it
#   snakemake --cores all --configfile configs/smoke.yaml my.yaml  # several: ONE --configfile flag
#     (a second `--configfile` flag replaces the first instead of adding to it)
#   snakemake --cores all --config set=train.lr=1e-4      # any key, like python -m arca --set
#   snakemake --profile workflow/profiles/slurm --configfile configs/paper.yaml
#   snakemake --report results/<name>/report.html          # after a run
from snakemake.utils import min_version

from arca import credit, grid, snakeconfig

min_version("9.0")


configfile: "configs/default.yaml"


# `--config set=train.lr=1e-4` (or set='[train.lr=1e-4, credit.sharpen=1.0]'): the same overrides
# as `python -m arca --set`, applied here so the DAG (and each run's hash) sees them.
snakeconfig.apply_set(config)
# The files again, read by arca's own strict reader: the checks of `python -m arca --config`.
snakeconfig.check_config_files(snakeconfig.config_files(workflow))
SOURCE = snakeconfig.config_source(snakeconfig.config_files(workflow), workflow.config_settings.config)

# The resolved, checked config the rules read (types, closed sets, values, the credit methods'
# requirements), validated once here; errors name the offending key.
CFG = grid.as_config(config, SOURCE)
credit.check_config(CFG, SOURCE)
# An override of what a run id fixes (method, rank, seed, a cell's overrides) is an error.
snakeconfig.check_overrides(CFG, snakeconfig.cli_overrides(workflow.config_settings.config))
# The same config files, in Snakemake's merge order, plus --config values as --set: every rule
# hands them to `python -m arca` as {params.config}. A params function that Snakemake's rerun
# triggers leave out (see snakeconfig.config_param), so that adding a config file does not by itself rerun
# jobs; what a training run depends on is its run_hash param.
CONFIG = snakeconfig.config_param(snakeconfig.config_args(snakeconfig.config_files(workflow), workflow.config_settings.config))
# {"gpu": 1} on model jobs when the config targets a GPU, else {}.
GPU = grid.gpu(CFG)


report: "workflow/report/workflow.rst"


# Cheap jobs stay on the submitting host under a cluster executor (the data step may also need
# the network, which compute nodes often lack).
localrules:
    all,
    prepare_data,
    aggregate,
    figures,
    heatmap,


include: "workflow/rules/data.smk"
include: "workflow/rules/base.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/bench.smk"


rule all:
    input:
        grid.all_targets(CFG),
    default_target: True
