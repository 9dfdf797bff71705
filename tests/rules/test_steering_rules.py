"""Steering rules run by Snakemake itself on the demo preset, sized to the session's demo chain (conftest.py).

The preset (config/demo.yaml) is cut to what the chain holds: demo-llm and demo-paligemma with 4 blocks, the
demo-categories spec of the chain, the demo SAE at blocks 1 and 3. The chain's outputs are linked where the
preset's paths expect them and the categories probes at block 3 are fit with the real train_probe script, so one
``snakemake --allowed-rules <steering rules>`` run plans and runs exactly the steering jobs: directions, steer_model,
the steering figure and the rollouts table. The tests check what those jobs wrote against numbers computed here,
and that a bad steering section fails before any job.
"""

import json
import re
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from demo_chain import CHAIN_K, CHAIN_SAE_LAYERS, CHAIN_SPEC, chain_model_spec

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"demo-llm": "llm", "demo-paligemma": "vlm"}  # preset name -> chain name
LAYER = 3  # steering layer: the last block, so the one-block-late control does not exist
# the tests that read the steering run: one real Snakemake run of ~1 minute on 2 CPU cores, after the demo chain
steering_run = pytest.mark.slow
STEERING_RULES = ["fit_steering_directions", "steer_model", "plot_steering", "table_steering_rollouts"]


def _preset() -> dict:
    return yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())


def _chain_config() -> dict:
    """config/demo.yaml cut to the chain: two 4-block models, one dataset, one probe task, steering at block 3."""
    cfg = _preset()
    cfg["coco"]["synthetic"] = {"n_images": 64, "image_size": 48}
    vlm = chain_model_spec("paligemma")
    vlm["demo"] = {**vlm["demo"], "base": "demo-llm", "perturb_from": CHAIN_K}
    cfg["models"] = {"demo-llm": chain_model_spec("gemma2"), "demo-paligemma": vlm}
    cfg["datasets"] = {"demo-categories": dict(CHAIN_SPEC)}
    cfg["extraction"]["device"] = "cpu"
    cfg["saes"]["demo-sae"]["layers"] = CHAIN_SAE_LAYERS
    cfg["saes"]["demo-sae"]["train"].update(d_sae=64, steps=100)
    cfg["comparisons"] = {"llm-vs-paligemma": cfg["comparisons"]["llm-vs-paligemma"]}
    cfg["probes"]["settings"].update(repeats=1, permutations=0, curve_layers=[LAYER])
    cfg["probes"]["tasks"] = {
        "categories": {"dataset": "demo-categories", "pooling": "mean", "models": list(MODELS)}
    }
    cfg.pop("sae_features")  # its CIFAR-100 dataset is not in the chain; sae_training fits the chain as it is
    cfg["steering"].update(layers=[LAYER], alphas=[0.0, 1.0, 2.0])  # the preset's grid less 0.5 (runtime)
    return cfg


def _link(src, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(Path(src).resolve(), target_is_directory=Path(src).is_dir())


def _place_chain(chain, cfg: dict, root: Path) -> None:
    """The chain's outputs where the preset's layout expects them (models, manifest, images, activations, SAEs)."""
    from repshift.config import targets as T
    from repshift.formats import layout

    data = cfg["paths"]["data"]
    for name, short in MODELS.items():
        _link(chain["models"][short], root / T.model_dir(cfg, name))
        _link(chain["acts"][short], root / T.activations(cfg, name, "demo-categories"))
    manifest = root / T.manifest(cfg, "demo-categories")
    _link(chain["manifest"]["manifest"], manifest)
    _link(chain["manifest"]["meta"], manifest.with_suffix(".json"))
    _link(chain["coco"]["images"], root / T.dataset_images(cfg, "demo-categories"))
    _link(chain["sae_root"], root / layout.sae_family_dir(data, "demo-sae"))


@pytest.fixture(scope="module")
def steered(chain, run, tmp_path_factory, snakemake_cli):
    """One real Snakemake run of the steering rules; returns (root, config, the finished process)."""
    from repshift.formats import layout

    root = tmp_path_factory.mktemp("steering_rules")
    cfg = _chain_config()
    _place_chain(chain, cfg, root)
    results = cfg["paths"]["results"]
    task = cfg["probes"]["tasks"]["categories"]
    run(
        "train_probe",
        input={name: str(root / layout.activations_dir(results, name, "demo-categories")) for name in MODELS},
        output={
            "results": root / layout.probe_table(results, "categories", LAYER),
            "weights": root / layout.probe_weights(results, "categories", LAYER),
        },
        params={"task": task, "settings": {"c_grid": [1.0], "seeds": [0], "inner_folds": 2}, "seed": 0},
        wildcards={"task": "categories", "layer": str(LAYER)},
    )
    (root / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    targets = [layout.figure(results, "steering"), layout.figure(results, "steering_rollouts", "html")]
    # one thread per steering job and room for both on the test machine's CPU ("gpu" is the GPU-rule resource)
    run_both = ["--set-threads", "steer_model=1", "--resources", "gpu=2"]
    proc = snakemake_cli(root, *targets, "--cores", "2", *run_both, "--allowed-rules", *STEERING_RULES)
    return root, cfg, proc


@pytest.fixture(scope="module")
def snakemake_cli():
    import os
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def call(cwd, *args, configfile="config.yaml", check=True):
        cmd = [str(bin_dir / "snakemake"), "-s", str(ROOT / "Snakefile"), "--configfile", configfile]
        cmd += ["--replace-workflow-config", *args]
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        return proc

    return call


def _held_out(root: Path, cfg: dict, model: str) -> pd.DataFrame:
    """Held-out rows of the source class the steering measures use, straight from the manifest."""
    from repshift.config import targets as T

    s = cfg["steering"]
    df = pd.read_csv(root / T.manifest(cfg, "demo-categories"), sep="\t")
    modality = "image" if model == "demo-paligemma" else "text"
    pair = s["pairs"]["cat-dog"]
    rows = df[
        (df.modality == modality) & (df.fold == s.get("heldout_fold", 0)) & (df.label_name == pair["source"])
    ]
    return rows.head(s["max_examples"])


def _steering_file(root, cfg, kind, model):
    from repshift.formats import layout

    build = {"table": layout.steering_table, "rollouts": layout.steering_rollouts}[kind]
    return root / build(cfg["paths"]["results"], model, "cat-dog", LAYER)


@steering_run
def test_snakemake_ran_exactly_the_steering_jobs(steered):
    root, cfg, proc = steered
    out = proc.stdout + proc.stderr
    ran = re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", out)
    assert sorted(ran) == sorted(
        ["fit_steering_directions"] * 2 + ["steer_model"] * 2 + ["plot_steering", "table_steering_rollouts"]
    ), out[-3000:]
    figs = root / cfg["paths"]["results"] / "figs"
    assert (figs / "steering.png").stat().st_size > 5000
    assert not list(root.rglob("*.tmp*"))


@steering_run
def test_alpha_zero_rows_are_exactly_zero_and_every_edit_has_one(steered):
    root, cfg, _ = steered
    s = cfg["steering"]
    for model in MODELS:
        t = pd.read_csv(_steering_file(root, cfg, "table", model), sep="\t")
        assert sorted(t["alpha"].unique()) == sorted({0.0, *s["alphas"]})
        zero = t[t["alpha"] == 0]
        assert len(zero) and (zero["value"] == 0).all() and (zero["ci_low"] == 0).all(), zero
        assert (zero["ci_high"] == 0).all()
        edits = t.groupby(["direction", "write_layer", "measure", "readout_layer"])["alpha"].apply(set)
        assert all(a == {0.0, *s["alphas"]} for a in edits), edits
        # n: the held-out source-class rows of fold heldout_fold, counted here from the manifest
        assert (t["n"] == len(_held_out(root, cfg, model))).all()
        assert set(t["measure"]) == {"efficacy", "damage", "persistence"}


@steering_run
def test_a_write_after_the_last_block_reaches_no_other_position(steered):
    """Block 3 is the demo models' last: what is added to its output at a position changes only that position's
    logits. The VLM edits image tokens, so its efficacy and damage (read at text positions) stay exactly 0 while
    the image-pooled probe readout moves; written one block earlier, the edit reaches the text through attention.
    The LLM edits the text itself, so its efficacy moves at block 3 too."""
    root, cfg, _ = steered
    vlm = pd.read_csv(_steering_file(root, cfg, "table", "demo-paligemma"), sep="\t")
    edits = vlm[(vlm.alpha > 0) & (vlm.kind != "random")]
    at_last = edits[edits.write_layer == LAYER]
    assert len(at_last) and (at_last[at_last.measure != "persistence"]["value"] == 0).all()
    assert (at_last[at_last.measure == "persistence"]["value"].abs() > 1e-3).all()
    earlier = edits[(edits.write_layer == LAYER - 1) & (edits.measure == "efficacy")]
    assert (earlier["value"].abs() > 0).all()
    llm = pd.read_csv(_steering_file(root, cfg, "table", "demo-llm"), sep="\t")
    moved = llm[(llm.alpha > 0) & (llm.write_layer == LAYER) & (llm.measure == "efficacy")]
    assert len(moved) and (moved["value"].abs() > 0).all()


@steering_run
def test_random_controls_have_the_same_norm_and_only_the_write_layer(steered):
    from safetensors.numpy import load_file

    root, cfg, _ = steered
    from repshift.formats import layout

    n_random = cfg["steering"]["n_random"]
    for model in MODELS:
        stem = root / layout.steering_directions(cfg["paths"]["results"], model, "cat-dog", LAYER)
        names = json.loads(stem.with_suffix(".json").read_text())["names"]
        assert names == ["probe", "mean-diff", "sae"] + [f"random-{i}" for i in range(n_random)]
        d_KD = load_file(f"{stem}.safetensors")["directions_KD"].astype(np.float64)
        np.testing.assert_allclose(np.linalg.norm(d_KD, axis=1), 1.0, atol=1e-5)
        assert abs(d_KD[3] @ d_KD[4]) < 0.5  # two different random draws
        t = pd.read_csv(_steering_file(root, cfg, "table", model), sep="\t")
        rand = t[t["kind"] == "random"]
        assert set(rand["direction"]) == {f"random-{i}" for i in range(n_random)}
        assert set(rand["write_layer"]) == {LAYER}
        # real directions also one block early; one block late would be block 4, which a 4-block model lacks
        for kind in ("probe", "mean-diff", "sae"):
            assert set(t[t["kind"] == kind]["write_layer"]) == {LAYER, LAYER - 1}, kind


def _probe_readout(root, cfg, model, modality):
    """The fold probe's target-minus-source readout w = coef[dog] / scale - coef[cat] / scale, by hand."""
    from repshift.formats import layout
    from repshift.probes.saved import FoldProbes

    weights = root / layout.probe_weights(cfg["paths"]["results"], "categories", LAYER)
    fp = FoldProbes.load(weights / f"{model}.{modality}.folds")
    fits = [f for f in range(len(fp)) if fp.fold_F[f] == cfg["steering"].get("heldout_fold", 0)]
    f = min(fits, key=lambda i: fp.seed_F[i])
    classes = list(CHAIN_SPEC["classes"])
    k = {name: list(fp.classes_K).index(classes.index(name)) for name in ("cat", "dog")}
    return (fp.coef_FKD[f][k["dog"]] - fp.coef_FKD[f][k["cat"]]) / fp.scale_FD[f]


@steering_run
def test_probe_direction_moves_its_own_probe_by_alpha_norm_w(steered):
    """At the write layer, the probe direction shifts every pooled image / caption row by alpha * ||h_L|| * w_hat,
    so the probe's target-minus-source readout moves by alpha * ||h_L|| * ||w|| for every example."""
    from safetensors.numpy import load_file

    from repshift.formats import layout

    root, cfg, _ = steered
    for model, modality in (("demo-paligemma", "image"), ("demo-llm", "text")):
        w = _probe_readout(root, cfg, model, modality)
        stem = root / layout.steering_directions(cfg["paths"]["results"], model, "cat-dog", LAYER)
        probe_D = load_file(f"{stem}.safetensors")["directions_KD"][0]
        np.testing.assert_allclose(probe_D, w / np.linalg.norm(w), atol=1e-5)
        log = root / cfg["paths"]["results"] / f"logs/steer_model/{model}/cat-dog/layer-{LAYER}.log"
        norm = float(re.search(r"\|\|h\|\| = ([0-9.]+)", log.read_text()).group(1))
        t = pd.read_csv(_steering_file(root, cfg, "table", model), sep="\t")
        # the table carries the edit scale the log prints (one value per model and layer)
        assert t.residual_norm.nunique() == 1 and t.residual_norm.iloc[0] == pytest.approx(norm, abs=1e-3)
        own = t[
            (t.kind == "probe")
            & (t.measure == "persistence")
            & (t.write_layer == LAYER)
            & (t.readout_layer == LAYER)
        ]
        assert len(own) == len(cfg["steering"]["alphas"]) + (0.0 not in cfg["steering"]["alphas"])
        for _, r in own.iterrows():
            want = r["alpha"] * norm * np.linalg.norm(w)
            assert r["value"] == pytest.approx(want, rel=2e-3, abs=1e-6), (model, r["alpha"])
            assert r["ci_high"] - r["ci_low"] <= 1e-4 * max(1.0, abs(want)), (
                "the same shift for every example"
            )


def _greedy_unedited(root, cfg, model, rows) -> dict[str, str]:
    """Greedy continuations of the held-out rows by plain transformers, one row at a time (no repshift code)."""
    import torch
    from PIL import Image
    from transformers import (
        AutoModelForCausalLM,
        AutoProcessor,
        AutoTokenizer,
        PaliGemmaForConditionalGeneration,
    )

    from repshift.config import targets as T

    ro = cfg["steering"]["rollouts"]
    path = root / T.model_dir(cfg, model)
    out = {}
    if model == "demo-llm":
        tok, lm = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
        for _, r in rows.iterrows():
            enc = tok(f"{r['text']} This is a picture of a", return_tensors="pt")
            with torch.no_grad():
                ids = lm.generate(**enc, max_new_tokens=ro["max_new_tokens"], do_sample=False)
            out[str(r["example_id"])] = tok.decode(
                ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True
            )
        return out
    proc, vlm = AutoProcessor.from_pretrained(path), PaliGemmaForConditionalGeneration.from_pretrained(path)
    images = root / T.dataset_images(cfg, "demo-categories")
    for _, r in rows.iterrows():
        image = Image.open(images / r["file"]).convert("RGB")
        enc = proc(text="<image>" + cfg["models"][model]["image_prompt"], images=image, return_tensors="pt")
        with torch.no_grad():
            ids = vlm.generate(**enc, max_new_tokens=ro["max_new_tokens"], do_sample=False)
        out[str(r["example_id"])] = proc.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return out


def _records(root, cfg, model) -> list[dict]:
    lines = _steering_file(root, cfg, "rollouts", model).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@steering_run
def test_rollouts_have_their_fields_and_alpha_zero_is_the_unedited_greedy_text(steered):
    root, cfg, _ = steered
    ro = cfg["steering"]["rollouts"]
    for model in MODELS:
        recs = _records(root, cfg, model)
        rows = _held_out(root, cfg, model).head(ro["n_examples"])
        ids = [str(i) for i in rows["example_id"]]
        assert all(
            set(r) == {"model", "example_id", "pair", "layer", "direction", "kind", "alpha", "text"}
            for r in recs
        )
        assert {(r["model"], r["pair"], r["layer"]) for r in recs} == {(model, "cat-dog", LAYER)}
        plans = {(r["example_id"], r["direction"], r["kind"], r["alpha"]) for r in recs}
        want = {(i, "none", "none", 0.0) for i in ids}
        want |= {(i, d, k, a) for i in ids for d, k in [("probe", "probe"), ("mean-diff", "mean-diff"),
                                                        ("sae", "sae"), ("random-0", "random")]
                 for a in ro["alphas"]}  # fmt: skip
        assert plans == want and len(recs) == len(want)
        unedited = {r["example_id"]: r["text"] for r in recs if r["direction"] == "none"}
        assert unedited == _greedy_unedited(root, cfg, model, rows)
        assert all(isinstance(r["text"], str) for r in recs)


@steering_run
def test_directions_carry_provenance(steered):
    from repshift.config import targets as T
    from repshift.formats import layout

    root, cfg, _ = steered

    for model in MODELS:
        stem = root / layout.steering_directions(cfg["paths"]["results"], model, "cat-dog", LAYER)
        meta = json.loads(stem.with_suffix(".json").read_text())
        prov = meta["provenance"]
        assert {"created", "versions", "config_hash", "layer_convention"} <= set(prov)
        assert "output of" in prov["layer_convention"] and prov["versions"].get("torch")
        assert meta["meta"]["heldout_fold"] == cfg["steering"].get("heldout_fold", 0)
        df = pd.read_csv(root / T.manifest(cfg, "demo-categories"), sep="\t")
        train = (df.modality == meta["meta"]["modality"]) & (
            df.fold != cfg["steering"].get("heldout_fold", 0)
        )
        assert meta["meta"]["n_train"] == int(train.sum())
        sparsity = pd.read_csv(
            root / layout.steering_sparsity(cfg["paths"]["results"], model, "cat-dog", LAYER), sep="\t"
        )
        assert len(sparsity)
        bench = root / cfg["paths"]["results"] / f"benchmarks/steer_model/{model}/cat-dog/layer-{LAYER}.tsv"
        assert bench.exists()


class _Table(HTMLParser):
    """The rows of the first <table> as lists of cell texts (header row included)."""

    def __init__(self):
        super().__init__()
        self.rows, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


@steering_run
def test_rollouts_table_for_the_report(steered, snakemake_cli):
    root, cfg, _ = steered
    figs = root / cfg["paths"]["results"] / "figs"
    page = (figs / "steering_rollouts.html").read_text(encoding="utf-8")
    parser = _Table()
    parser.feed(page)
    header, *rows = parser.rows
    assert header == ["model", "pair", "layer", "example", "direction", "direction kind", "α", "text"]
    table = pd.DataFrame(rows, columns=header)
    for model in MODELS:
        recs = _records(root, cfg, model)
        mine = table[table["model"] == model]
        assert len(mine) == len(recs)
        for example, g in mine.groupby("example", sort=False):
            # the unedited rollout comes first for each example, with the JSONL's text
            first = g.iloc[0]
            assert (first["direction"], first["direction kind"], first["α"]) == ("none", "none", "0.0")
            jsonl = next(r["text"] for r in recs if r["example_id"] == example and r["direction"] == "none")
            assert first["text"] == jsonl
            assert (g.iloc[1:]["direction"] != "none").all()
    tsv = pd.read_csv(figs / "steering_rollouts.tsv", sep="\t", keep_default_na=False)
    assert list(tsv["text"]) == list(table["text"])
    # the table is a registered report entry: it is in the zipped report
    target = str((figs / "steering_rollouts.html").relative_to(root))
    proc = snakemake_cli(root, target, "--report", "report.zip", "--allowed-rules", *STEERING_RULES)
    with zipfile.ZipFile(root / "report.zip") as z:
        names = z.namelist()
    assert any(n.endswith("steering_rollouts.html") for n in names), (names, proc.stderr[-2000:])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s: s["pairs"].update({"cat-horse": {"source": "cat", "target": "horse"}}),
            "steering.pairs.cat-horse.target: 'horse' is not a class of dataset demo-categories",
        ),
        (
            lambda s: s.update(layers=[2, 6]),
            "steering.layers: layer 6 requested but demo-paligemma has 6 blocks (0-5)",
        ),
    ],
    ids=["pair-class-not-in-dataset", "layer-out-of-range"],
)
def test_bad_steering_section_fails_before_any_job(tmp_path, snakemake_cli, change, message):
    cfg = _preset()
    change(cfg["steering"])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    proc = snakemake_cli(tmp_path, "--cores", "1", configfile="bad.yaml", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert any(message in line for line in out.splitlines()), out[-3000:]
    assert not (tmp_path / "demo").exists(), "a job ran before the config was refused"
