"""Every rule's params carry every key its step reads: the params of each job of the demo DAG, built by
Snakemake itself (its API, no job run), against a static scan of ``params["key"]`` in the step's code.

A rule whose ``params:`` lost a key, or a step that started reading a new one without the rule passing it,
fails here in seconds instead of at the end of a demo run.
"""

import ast
import inspect
import os
from pathlib import Path

import pytest

from repshift.runtime import all_steps

ROOT = Path(__file__).resolve().parents[2]


def _step_of(script: Path) -> str:
    """The step a rule script runs: ``run_rule(snakemake, <step>)``."""
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_rule":
            return node.args[1].id
    raise AssertionError(f"{script}: no run_rule(snakemake, <step>) call")


def _is_params(node) -> bool:
    return isinstance(node, ast.Name) and node.id == "params"


def params_read(fn) -> set[str]:
    """Keys a step (and the helpers of its module it calls) reads as ``params["key"]`` or
    ``params.get("key", ...)``."""
    module = inspect.getmodule(fn)
    defs = {n.name: n for n in ast.parse(inspect.getsource(module)).body if isinstance(n, ast.FunctionDef)}
    keys, seen, todo = set(), set(), [defs[fn.__name__]]
    while todo:
        node = todo.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        for sub in ast.walk(node):
            if (
                isinstance(sub, ast.Subscript)
                and _is_params(sub.value)
                and isinstance(sub.slice, ast.Constant)
            ):
                keys.add(sub.slice.value)
            if (
                isinstance(sub, ast.Call)
                and isinstance(sub.func, ast.Attribute)
                and sub.func.attr == "get"
                and _is_params(sub.func.value)
                and sub.args
                and isinstance(sub.args[0], ast.Constant)
            ):
                keys.add(sub.args[0].value)
            if isinstance(sub, ast.Name) and sub.id in defs:
                todo.append(defs[sub.id])
    return keys


def test_params_scan_of_one_step():
    # train_probe reads task (subscript), settings and layer (get); score_cross_layer task, layers, name
    assert params_read(all_steps()["train_probe"]) >= {"task", "settings", "layer"}
    assert params_read(all_steps()["score_cross_layer"]) >= {"task", "layers", "name"}


@pytest.fixture(scope="module")
def demo_jobs(tmp_path_factory):
    """Every job of the demo DAG (default target), with params expanded the way Snakemake does."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    workdir = tmp_path_factory.mktemp("dag")
    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
            wf_api = api.workflow(
                resource_settings=ResourceSettings(cores=1),
                config_settings=ConfigSettings(
                    configfiles=[ROOT / "config/demo.yaml"], replace_workflow_config=True
                ),
                snakefile=ROOT / "Snakefile",
                workdir=workdir,
            )
            wf_api.dag(DAGSettings())
            workflow = wf_api._workflow
            workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
            workflow._build_dag()
            jobs = [(job.rule, dict(job.params.items())) for job in workflow.dag.jobs]
    finally:
        os.chdir(cwd)
    return jobs


# Keys a step may read that its rule does not pass, each with the reason (keep this short).
# All of them are command-line fallbacks of a wildcard (``repshift step NAME`` has no wildcards): under
# Snakemake the step reads the job's wildcard first.
OPTIONAL: dict[str, set[str]] = {
    "extract_activations": {"model"},  # wildcards.model
    "spliced_loss": {"model"},  # wildcards.model
    "train_probe": {"layer"},  # wildcards.layer
    "score_cross_layer": {"name"},  # wildcards.task
    "class_features": {"layer", "name"},  # wildcards.layer, wildcards.analysis
    "sae_feature_probe": {"layer", "name"},  # wildcards.layer, wildcards.analysis
    "train_vlm_sae": {"layer", "model"},  # wildcards.layer, wildcards.model
    "evaluate_vlm_sae": {"layer", "model"},  # wildcards.layer, wildcards.model
    "steer_model": {"model"},  # wildcards.model
}


def test_every_demo_rule_passes_the_params_its_step_reads(demo_jobs):
    steps = all_steps()
    checked, problems = set(), set()
    for rule, params in demo_jobs:
        if rule.name == "all":
            continue
        step = _step_of(ROOT / "workflow_scripts" / f"{rule.name}.py")
        missing = params_read(steps[step]) - set(params) - OPTIONAL.get(step, set())
        if missing:
            problems.add(
                f"rule {rule.name}: step {step} reads params {sorted(missing)} the rule does not pass"
            )
        assert "code" in params, f"rule {rule.name}: no code hash param (step_hash({rule.name!r}))"
        checked.add(rule.name)
    assert not problems, "\n".join(sorted(problems))
    # the demo DAG has every rule but the download/fetch ones and merge_activations (shards: 1)
    assert len(checked) == 33, sorted(checked)
