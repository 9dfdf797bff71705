"""train_vlm_sae and evaluate_vlm_sae through real ``snakemake`` on the demo chain: the chain's manifest, images,
models and base SAE are placed where a demo-preset config expects them, and only the two trained-SAE rules may
run (``--allowed-rules``). One layer, a few hundred SAE steps; a config error fails before any job."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from demo_chain import CHAIN_ARCH, CHAIN_SAE_LAYERS, chain_model_spec

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MPLBACKEND": "Agg",
    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
}
MODEL, LAYER, WIDTH = "demo-paligemma", 1, 4  # WIDTH: expansion over d_model
TABLES = ("curve", "eval", "compare", "sharing", "sparse")


def _config(work: Path) -> dict:
    """The demo preset cut to the chain: its two models (4 blocks), its dataset, its SAE, one trained layer."""
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["paths"] = {"data": "data", "results": "results"}  # relative to the run directory
    models = {"demo-llm": CHAIN_ARCH["llm"], MODEL: CHAIN_ARCH["vlm"]}
    cfg["models"] = {name: chain_model_spec(arch) for name, arch in models.items()}
    cfg["models"][MODEL]["demo"]["base"] = "demo-llm"
    cfg["datasets"] = {"demo-categories": cfg["datasets"]["demo-categories"]}
    cfg["saes"] = {"demo-sae": {**cfg["saes"]["demo-sae"], "layers": CHAIN_SAE_LAYERS}}
    cfg["saes"]["self"] = {
        "source": "local",
        "path_template": f"data/saes/trained/{MODEL}/layer-{{layer}}",
        "layers": [LAYER],
    }
    cfg["comparisons"] = {}
    cfg["probes"]["tasks"] = {}
    cfg["probes"]["settings"].pop("curve_layers", None)
    for key in ("steering", "sae_features", "stats", "reproduction"):
        cfg.pop(key, None)
    cfg["spliced"] = {**cfg.get("spliced", {}), "datasets": []}
    cfg["extraction"] = {**cfg["extraction"], "device": "cpu", "batch_size": 8}
    st = cfg["sae_training"]
    st["models"] = {MODEL: {"layers": [LAYER], "base_sae": "demo-sae"}}
    st["train"] = {**st["train"], "expansion": WIDTH, "tokens": 128 * 150, "log_every": 25}
    st["sparse_probes"]["k"] = [1, 4]
    return cfg


def snakemake(work, cfg, *targets, check=True, dry=False):
    path = work / f"config-{len(list(work.glob('config-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # targets first: --allowed-rules and --configfile take every word after them
    cmd = [str(BIN / "snakemake"), *map(str, targets), "-s", str(ROOT / "Snakefile"), "--cores", "1"]
    cmd += ["-n"] * dry + ["--replace-workflow-config", "--configfile", str(path)]
    cmd += ["--allowed-rules", "train_vlm_sae", "evaluate_vlm_sae"]
    proc = subprocess.run(cmd, cwd=work, env=ENV, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def _place_chain(chain, cfg, work):
    """Copy the chain's outputs to the paths the config's jobs read (upstream rules never run here)."""
    from repshift.config import targets as T
    from repshift.formats import layout

    def put(src, dst):
        dst = work / dst
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if Path(src).is_dir() else shutil.copy)(src, dst)

    put(chain["manifest"]["manifest"], T.manifest(cfg, "demo-categories"))
    put(chain["manifest"]["meta"], Path(T.manifest(cfg, "demo-categories")).with_suffix(".json"))
    put(chain["coco"]["images"], T.dataset_images(cfg, "demo-categories"))
    for name, role in (("demo-llm", "llm"), (MODEL, "vlm")):
        put(chain["models"][role], T.model_dir(cfg, name))
    put(chain["sae_root"], layout.sae_family_dir(cfg["paths"]["data"], "demo-sae"))


def _outputs(cfg, layer=LAYER):
    from repshift.formats import layout

    return {k: Path(layout.vlm_sae_table(cfg["paths"]["results"], MODEL, layer, k)) for k in TABLES}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, chain):
    work = tmp_path_factory.mktemp("sae_training_rules")
    cfg = _config(work)
    _place_chain(chain, cfg, work)
    out = _outputs(cfg)
    proc = snakemake(work, cfg, *out.values())
    assert "train_vlm_sae" in proc.stdout + proc.stderr and "evaluate_vlm_sae" in proc.stdout + proc.stderr
    sae_dir = work / "data/saes/trained" / MODEL / f"layer-{LAYER}"
    return {
        "work": work,
        "cfg": cfg,
        "out": out,
        "sae_dir": sae_dir,
        "tables": {k: pd.read_csv(work / p, sep="\t") for k, p in out.items()},
    }


def test_checkpoint_loads_with_the_configured_width_and_scale(trained):
    from sae_lens import SAE, StandardSAE

    sae = SAE.load_from_disk(str(trained["sae_dir"]))
    assert isinstance(sae, StandardSAE)  # architecture: standard
    d_model = sae.cfg.d_in
    assert d_model == 64 and sae.cfg.d_sae == WIDTH * d_model
    assert sae.cfg.metadata.hook_name == f"blocks.{LAYER}.hook_resid_post"
    info = json.loads((trained["sae_dir"] / "repshift_source.json").read_text())
    assert info["source"] == "trained" and info["layer"] == LAYER and info["model"] == MODEL
    assert math.isfinite(info["input_scale"]) and info["input_scale"] > 0
    assert info["train"]["expansion"] == WIDTH and info["train"]["tokens"] == 128 * 150
    assert info["provenance"]  # code, versions, params


def test_training_curve_has_the_documented_columns_and_finite_values(trained):
    from repshift.sae.train import CURVE_COLUMNS

    curve = trained["tables"]["curve"]
    assert list(curve.columns) == [*CURVE_COLUMNS, "model", "layer"]
    steps = (128 * 150) // 128
    # step: 0-based index of the step just taken, every log_every steps and the last one; tokens seen so far
    assert curve["step"].tolist() == [*range(0, steps, 25), steps - 1]
    assert (curve["tokens"] == (curve["step"] + 1) * 128).all() and curve["tokens"].iloc[-1] == 128 * 150
    assert np.isfinite(curve[list(CURVE_COLUMNS)].to_numpy(dtype=float)).all()
    assert curve["fvu"].iloc[-1] < curve["fvu"].iloc[0]  # it learned something
    assert curve["lr"].iloc[0] == pytest.approx(0.003) and curve["lr"].iloc[-1] < 1e-4  # linear decay to 0
    assert ((curve["dead_frac"] >= 0) & (curve["dead_frac"] <= 1)).all()


def test_evaluation_has_a_row_per_modality_and_span(trained):
    ev = trained["tables"]["eval"]
    assert {"sae", "position_kind", "metric", "value", "model", "layer"} <= set(ev.columns)
    assert set(ev["sae"]) == {"trained", "base"}
    kinds = {"image", "prompt", "caption", "splice-text", "splice-image", "splice-all"}
    for sae in ("trained", "base"):
        got = set(ev.loc[ev["sae"] == sae, "position_kind"])
        assert got == kinds, got
    v = ev.set_index(["sae", "position_kind", "metric"])["value"]
    for kind in ("image", "prompt", "caption"):
        assert 0 <= v[("trained", kind, "dead_frac")] <= 1 and v[("trained", kind, "l0")] > 0
        assert v[("trained", kind, "d_sae")] == WIDTH * 64 and v[("base", kind, "d_sae")] == 64
    # the SAE trained on these tokens reconstructs them better than an untouched stream's zero: FVU below 1
    assert v[("trained", "image", "fvu")] < 1
    # zero ablation is the same per span whichever SAE is spliced
    for span in ("text", "image", "all"):
        assert v[("trained", f"splice-{span}", "ce_zero")] == v[("base", f"splice-{span}", "ce_zero")]


def test_compare_sharing_and_sparse_tables(trained):
    cmp = trained["tables"]["compare"].set_index("metric")["value"]
    assert {"max_cos_mean", "random_max_cos_mean", "code_corr_mean"} <= set(cmp.index)
    assert -1 <= cmp["max_cos_mean"] <= 1
    sharing = trained["tables"]["sharing"].set_index("metric")["value"]
    fracs = [sharing[f"frac_{c}"] for c in ("image-only", "text-only", "shared")]
    assert sum(fracs) == pytest.approx(1.0, abs=1e-4) or sharing["frac_dead"] == 1
    sparse = trained["tables"]["sparse"]
    assert set(sparse["modality"]) == {"image", "text"} and len(sparse) > 0


def test_a_trained_dictionary_compared_with_itself_has_max_cosine_1(trained):
    """base_sae: a local saes entry pointing at the trained SAE itself; only evaluate_vlm_sae reruns."""
    work, cfg = trained["work"], trained["cfg"]
    cfg = {**cfg, "paths": {**cfg["paths"], "results": "results-self"}}
    cfg["sae_training"] = {**cfg["sae_training"], "models": {MODEL: {"layers": [LAYER], "base_sae": "self"}}}
    out = _outputs(cfg)
    proc = snakemake(work, cfg, out["compare"], out["eval"])
    assert "train_vlm_sae" not in proc.stdout.split("Job stats:")[-1]
    cmp = pd.read_csv(work / out["compare"], sep="\t").set_index("metric")["value"]
    assert cmp["max_cos_mean"] == pytest.approx(1.0, abs=1e-5)
    assert cmp["one_to_one_cos_mean"] == pytest.approx(1.0, abs=1e-5)
    assert cmp["code_corr_mean"] == pytest.approx(1.0, abs=1e-5)
    assert cmp["random_max_cos_mean"] < 0.9
    ev = pd.read_csv(work / out["eval"], sep="\t")
    t, b = (ev[ev["sae"] == s].reset_index(drop=True) for s in ("trained", "base"))
    np.testing.assert_allclose(t["value"], b["value"], rtol=1e-6)


BAD = {
    "architecture": (lambda st: st["train"].update(architecture="gated"), "sae_training.train.architecture"),
    "layer": (
        lambda st: st["models"][MODEL].update(layers=[1, 4]),
        f"sae_training.models.{MODEL}.layers: layer 4 requested but {MODEL} has 4 blocks (0-3)",
    ),
    "base": (lambda st: st["models"][MODEL].update(base_sae="nope"), f"sae_training.models.{MODEL}.base_sae"),
    "base-layer": (lambda st: st["models"][MODEL].update(layers=[0]), "demo-sae has no SAE at layer(s) [0]"),
    "model": (
        lambda st: st["models"].update({"demo-llm": {"layers": [1], "base_sae": "demo-sae"}}),
        "demo-llm",
    ),
}


@pytest.mark.parametrize("case", ["architecture", "layer"])
def test_a_bad_sae_training_config_fails_before_any_job(tmp_path, case):
    edit, message = BAD[case]
    cfg = _config(tmp_path)
    edit(cfg["sae_training"])
    proc = snakemake(tmp_path, cfg, *_outputs(cfg).values(), check=False, dry=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert message in out, out[-3000:]
    line = next(line for line in out.splitlines() if message in line)
    assert len(line) < 300  # one readable line, not a traceback or a schema dump
    assert "Job stats" not in out and not (tmp_path / "results").exists()


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_config_checks_name_the_sae_training_key(tmp_path, case):
    """The same checks Snakemake runs first (rules/common.smk), in process: every case, and the preset passes."""
    from repshift import config as rcfg

    schema = ROOT / "rules" / "config.schema.yaml"
    good = _config(tmp_path)
    rcfg.check_config(rcfg.checks.validate_config(good, schema))
    edit, message = BAD[case]
    cfg = _config(tmp_path)
    edit(cfg["sae_training"])
    with pytest.raises(rcfg.ConfigError, match="sae_training") as err:
        rcfg.check_config(rcfg.checks.validate_config(cfg, schema))
    assert message in str(err.value)
