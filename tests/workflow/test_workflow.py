"""Workflow-level tests: lint and format, dry-run job counts on the real config (offline), the demo end to
end in a temporary directory, and a probe-only rerun that never plans extraction or SAE jobs."""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

from repshift import config as rcfg

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MPLBACKEND": "Agg",
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
}


def snakemake(*args, cwd, check=True):
    cmd = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=1500)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table."""
    block = output.split("Job stats:", 1)[1]
    counts = {}
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


# The one Snakemake lint this workflow does not follow, by design: every rule runs in the one environment Snakemake
# runs in (the venv of `make install`, or envs/repshift.yaml), so no rule names a per-rule conda environment.
ACCEPTED_LINTS = {"Specify a conda environment or container for each rule."}


def test_lint_and_format():
    proc = subprocess.run(
        [str(BIN / "snakemake"), "--lint", "--cores", "1"], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    out = proc.stdout + proc.stderr
    titles = set(re.findall(r"^\s+\* (.+?):$", out, re.M))
    assert titles <= ACCEPTED_LINTS, out
    assert proc.returncode == 0 or titles, out
    fmt = subprocess.run(
        [str(BIN / "snakefmt"), "--check", "Snakefile", "rules"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_every_rule_has_a_one_line_message():
    # a rule without one prints its whole block in a dry run and `message: None` when it fails
    rules = {}
    for path in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        for block in re.split(r"\n(?=[ \t]*(?:local)?rule \w+:)", path.read_text()):
            m = re.match(r"[ \t]*(?:local)?rule (\w+):", block)
            if m and m.group(1) != "all":  # `all` runs nothing
                rules[m.group(1)] = re.search(r"\n\s+message:\n\s+\"[^\n]+\"\n", block) is not None
    assert len(rules) > 30 and not [r for r, has in rules.items() if not has]


def test_dry_run_real_config_offline(tmp_path):
    proc = snakemake(
        "-n",
        "--cores",
        "8",
        "--configfile",
        str(ROOT / "config.yaml"),
        "--directory",
        str(tmp_path),
        "results/figs/layer_sweep.pdf",
        cwd=tmp_path,
    )
    counts = job_counts(proc.stdout)
    assert counts.pop("total") == sum(counts.values())
    assert counts == {
        "download_coco": 1,
        "build_dataset": 1,
        "build_prompt_dataset": 2,  # prompts-original, prompts-multilingual
        # gemma2-2b and paligemma2-3b on coco-categories and the two prompt sets, all 26 layers each
        "extract_activations": 6,
        "fetch_sae": 26,  # one Gemma Scope SAE per block, encoded inside extraction (extraction.fused_sae)
        "collect_sae": 2,  # one marker per (SAE, model) over its 26 folders: the jobs list one input
        "spliced_loss": 6,  # both models on the three compared datasets
        "compare_sae": 3,  # one comparison per input set
        "train_probe": 26,
        "plot_layer_sweep": 1,
    }


def test_unfused_sae_plans_encode_jobs(tmp_path):
    """config.yaml encodes inside extraction (fused_sae: gemma-scope: compare_sae reads the activation folders);
    fused_sae: null stores dense token activations and plans one encode_sae job per (model, dataset)."""
    proc = snakemake(
        "-n",
        "--cores",
        "8",
        "results/figs/layer_sweep.pdf",
        "--configfile",
        str(ROOT / "config.yaml"),
        cwd=tmp_path,
    )
    # the fused comparison reads both activation folders (Snakemake lists them in no fixed order)
    reason = next(
        line for line in proc.stdout.splitlines() if "results/sae/shift/gemma-vs-paligemma-prompts" in line
    )
    for model in ("gemma2-2b", "paligemma2-3b"):
        assert f"results/activations/{model}/prompts-original" in reason, reason
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["extraction"]["fused_sae"] = None
    path = tmp_path / "unfused.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    proc = snakemake(
        "-n",
        "--cores",
        "8",
        "results/figs/layer_sweep.pdf",
        "--configfile",
        str(path),
        "--replace-workflow-config",
        cwd=tmp_path,
    )
    counts = job_counts(proc.stdout)
    assert counts["encode_sae"] == 6
    assert counts["extract_activations"] == 6 and counts["compare_sae"] == 3 and counts["fetch_sae"] == 26
    assert "results/sae/gemma-scope/gemma2-2b/prompts-original" in proc.stdout


def test_fused_sae_fit_on_a_pair_it_encodes_fails_before_any_job(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["extraction"]["fused_sae"] = "demo-sae"  # demo-sae is fit on demo-llm's demo-categories activations
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    proc = snakemake(
        "-n", "--cores", "1", "--configfile", str(bad), "--replace-workflow-config", cwd=tmp_path, check=False
    )
    assert proc.returncode != 0
    assert "a cycle" in proc.stdout + proc.stderr


def test_config_typo_fails_before_any_job(tmp_path):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["extraction"]["batchsize"] = cfg["extraction"].pop("batch_size")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake(
        "-n", "--cores", "1", "--configfile", str(bad), "--replace-workflow-config", cwd=tmp_path, check=False
    )
    assert proc.returncode != 0
    assert "batchsize" in proc.stdout + proc.stderr


def test_layer_out_of_range_fails_before_any_job(tmp_path):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["extraction"]["layers"] = [0, 26]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake(
        "-n", "--cores", "1", "--configfile", str(bad), "--replace-workflow-config", cwd=tmp_path, check=False
    )
    assert proc.returncode != 0
    assert "layer 26 requested but gemma2-2b has 26 blocks (0-25)" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_demo_end_to_end_and_probe_only_rerun(tmp_path):
    demo = ["--configfile", str(ROOT / "config" / "demo.yaml"), "--replace-workflow-config"]
    snakemake(*demo, "--cores", "2", cwd=tmp_path)  # rule all: every figure
    figs = tmp_path / "demo/results/figs"
    assert (figs / "layer_sweep.pdf").stat().st_size > 10_000
    table = pd.read_csv(figs / "layer_sweep.tsv", sep="\t")
    assert {"panel", "series", "layer", "value"} <= set(table.columns)
    # the demo VLM decoders copy the demo LLM up to block k-1 = 2: no text-only shift before k, a shift from k on
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    k = cfg["models"]["demo-paligemma"]["demo"]["perturb_from"]
    cos = table[table["panel"] == "SAE shift: per-token code cosine"]
    # captions are drawn with their n; the 5- and 8-sentence prompt sets are below figures.min_examples (TSV only)
    drawn = {c for c, d in cfg["comparisons"].items() if not d["dataset"].startswith("prompts")}
    assert {s.split(" (n=")[0] for s in cos["series"]} == drawn and all(" (n=" in s for s in cos["series"])
    # each comparison in its adapted model's colour (the n in the name does not hide it from the registry)
    assert cos.groupby("series")["color"].first().nunique() == len(drawn)
    spliced = table[table["panel"] == "SAE transfer: spliced-loss recovered (text-only inputs)"]
    assert {s.split(" ")[0] for s in spliced["series"]} == {"demo-llm", "demo-paligemma", "demo-llava"}
    for name in ("latent_density", "latents_shift"):
        assert (figs / f"{name}.png").stat().st_size > 5000 and (figs / f"{name}.tsv").exists()
    before, after = cos[cos["layer"] < k], cos[cos["layer"] >= k]
    assert (abs(before["value"] - 1) < 1e-4).all(), before
    assert (after["value"] < 0.99).all(), after
    # nothing left half-written
    assert not list(tmp_path.rglob("*.tmp*"))

    # probe companion figures: PDF + PNG + TSV each; the matrix diagonal is train_probe's cross-modal probe
    for name in ("probe_tasks", "attribute_probes", "cross_modal_matrix", "learning_curves"):
        assert (figs / f"{name}.png").stat().st_size > 5000 and (figs / f"{name}.pdf").exists(), name
        assert len(pd.read_csv(figs / f"{name}.tsv", sep="\t")), name
    matrix = pd.read_csv(figs / "cross_modal_matrix.tsv", sep="\t")
    probe_rows = pd.concat(
        pd.read_csv(p, sep="\t") for p in (tmp_path / "demo/results/probes/categories").glob("layer-*.tsv")
    )
    cross = probe_rows[
        (probe_rows.transfer == "cross-modal")
        & (probe_rows.probe == "logreg")
        & (probe_rows.metric == "accuracy")
        & (probe_rows.train_fraction == 1)
        & (probe_rows.test_space == "other")  # the matrix scores raw activations; "other-recentred" is extra
        & (probe_rows.repeat == 0)  # the matrix's saved fold probes are the first outer-CV repeat's
    ]
    for (model, src, dst, layer), g in cross.groupby(
        ["train_model", "train_modality", "test_modality", "layer"]
    ):
        cell = matrix[
            (matrix.panel == f"categories: {model}, {src} -> {dst}")
            & (matrix.train_layer == layer)
            & (matrix.test_layer == layer)
        ]
        assert abs(cell["value"].iloc[0] - g["value"].mean()) < 1e-4, (model, src, dst, layer)

    # the HTML report holds every figure (each registered with report() and a caption under report/)
    snakemake(*demo, "--cores", "1", "--report", str(tmp_path / "report.html"), cwd=tmp_path)
    html = (tmp_path / "report.html").read_text(errors="replace")

    # a registered result appears as '"<path>": {"name": "<file name>"' (a mere mention in a rule's code does not);
    # a figure counts as registered through its PNG or its PDF
    def registered(path):
        return f'"{path.relative_to(tmp_path)}": {{"name": "{path.name}"' in html

    missing = [p.name for p in sorted(figs.rglob("*.png")) if not registered(p)]
    assert not missing, f"figures not registered as PNG in the report: {missing}"
    tables = [p.name for p in sorted(figs.glob("*.tsv")) if not registered(p)]
    assert not tables, f"figure tables not attached to the report: {tables}"
    # the workflow-level description is rendered from the config: every model and comparison is named
    for name in [*cfg["models"], *cfg["comparisons"]]:
        assert name in html, f"{name} missing from the report's description"
    assert "output of decoder block L" in html
    # the zipped report holds the files themselves
    snakemake(*demo, "--cores", "1", "--report", str(tmp_path / "report.zip"), cwd=tmp_path)
    with zipfile.ZipFile(tmp_path / "report.zip") as z:
        names = z.namelist()
    for p in [*figs.glob("*.png"), *figs.glob("*.tsv")]:
        assert any(n.endswith(p.name) for n in names), f"{p.name} not in report.zip"

    # change a probe setting: only probe and figure jobs are planned, never extraction or SAE jobs
    cfg["probes"]["settings"]["c_grid"] = [0.1, 1.0]
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    proc = snakemake(
        "-n", "--cores", "2", "--configfile", str(changed), "--replace-workflow-config", cwd=tmp_path
    )
    counts = job_counts(proc.stdout)
    planned = set(counts) - {"total", "all"}
    probe_jobs = {"train_probe", "score_cross_layer"}
    assert (
        probe_jobs
        | {
            "plot_layer_sweep",
            "plot_probe_tasks",
            "plot_attribute_probes",
            "plot_cross_modal_matrix",
            "plot_learning_curves",
        }
        <= planned
    ), counts
    # only probe jobs and figures, from cached inputs (the SAE-feature classifiers have their own settings)
    assert all(r in probe_jobs or r.startswith("plot_") for r in planned), counts
    assert "plot_sae_features" not in planned, counts
    assert counts["train_probe"] == sum(len(rcfg.probe_layers(cfg, t)) for t in cfg["probes"]["tasks"])


def test_shards_plan_one_job_per_shard_and_a_merge(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["extraction"]["shards"] = 3
    validate(cfg, str(ROOT / "rules" / "config.schema.yaml"))
    path = tmp_path / "sharded.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(
        "-n", "--cores", "2", "--configfile", str(path), "--replace-workflow-config", cwd=tmp_path
    )
    counts = job_counts(proc.stdout)
    pairs = len(rcfg.extraction_pairs(cfg))  # (model, dataset) pairs
    assert counts["extract_activations"] == pairs * 3
    assert counts["merge_activations"] == pairs
