"""The experiment's configuration: typed specs per section, which jobs exist, and cross-section checks.

``rules/config.schema.yaml`` checks keys, types and slugs (Snakemake's ``validate`` also fills defaults);
:mod:`.checks` then checks references between sections, :mod:`.targets` derives what the DAG needs, and
:mod:`.specs` holds the frozen views. No I/O, no Snakemake.
"""

from repshift.config.checks import check_config, check_datasets
from repshift.config.specs import HUB_HELP, VLM_FAMILIES, ConfigError, ModelSpec, model_spec
from repshift.config.targets import *  # noqa: F403  (the "which jobs exist" queries, used by rules/common.smk)
from repshift.config.targets import dataset_source

__all__ = [
    "HUB_HELP",
    "VLM_FAMILIES",
    "ConfigError",
    "ModelSpec",
    "check_config",
    "check_datasets",
    "dataset_source",
    "model_spec",
]
