# ARCA reproduction: the DAG at a glance. Declarations only: the rules name their files through
# P = paths_of(CFG) (src/arca/paths.py); the decisions they need are in src/arca/snakerules.py.
#   snakemake --cores all                                  # configs/default.yaml
#   snakemake --cores all --configfile configs/smoke.yaml  # any file in configs/, layered on it
#   snakemake --cores all --configfile configs/smoke.yaml my.yaml  # several: ONE --configfile flag
#     (a second `--configfile` flag replaces the first instead of adding to it)
#   snakemake --cores all --config 'train={lr: 1.0e-4}'   # any key, Snakemake's nested form
#   snakemake --cores all --config set=train.lr=1e-4      # the same, like python -m arca --set
#   snakemake --profile workflow/profiles/slurm --configfile configs/paper.yaml
#   (a run that succeeds writes results/<name>/report.html and prints the main table and the claims)
from snakemake.utils import min_version

from arca import credit, snakeconfig, snakerules
from arca.config import ConfigError, curve_start_hash, eval_hash, heatmap_run, run_hash
from arca.paths import paths_of
from arca.report.summary import run_summary

min_version("9.0")


configfile: "configs/default.yaml"


try:
    # `--config 'train={steps: 2}'` reaches us with every leaf a string: given its YAML type first.
    # `--config set=train.lr=1e-4` (or set='[train.lr=1e-4, credit.sharpen=1.0]'): the same overrides
    # as `python -m arca --set`, applied here so the DAG (and each run's hash) sees them.
    snakeconfig.type_nested_values(config, workflow.config_settings.config)
    snakeconfig.apply_set(config)
    # The resolved, checked config the rules read (types, closed sets, values, the credit methods'
    # requirements), validated once here; errors name the key and the file or --config value.
    CFG = snakeconfig.checked_config(workflow, config)
    for source, layer in snakeconfig.config_layers(workflow):
        credit.check_methods_named(layer, source)  # an unknown method, named with its file
    credit.check_config(CFG, snakeconfig.config_source(workflow))
    # An override of what a run id fixes (method, rank, seed, a cell's overrides) is an error.
    snakeconfig.check_overrides(CFG, snakeconfig.cli_overrides(workflow.config_settings.config))
except ConfigError as e:
    snakeconfig.fail(e)  # one message, no traceback
# The same config files, in Snakemake's merge order, plus --config values as --set: every rule
# hands them to `python -m arca` as {params.config}. A params function that Snakemake's rerun
# triggers leave out (see snakeconfig.config_param), so that adding a config file does not by itself rerun
# jobs; what a training run depends on is its run_hash param.
CONFIG = snakeconfig.config_param(snakeconfig.config_args(snakeconfig.config_files(workflow), workflow.config_settings.config))
# Every file a rule reads or writes, named once (arca.paths).
P = paths_of(CFG)
# {"gpu": 1} on model jobs when the config targets a GPU, else {}.
GPU = snakerules.gpu(CFG)


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
        snakerules.all_targets(CFG),
    default_target: True


# The end of a successful run that leaves the whole DAG complete: Snakemake's HTML report (every
# table, figure and the claims), then the main table, the claims and the report's path on the screen.
onsuccess:
    if snakerules.complete(CFG):
        print(run_summary(CFG, snakeconfig.build_report(workflow, P.report)))
