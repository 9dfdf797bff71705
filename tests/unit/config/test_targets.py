"""Which jobs and inputs exist (repshift.config.targets), pinned for the shipped configs by hand.

demo: 3 demo models of 6 blocks (demo-llm, demo-paligemma, demo-llava) and a 2-block vision stream; 4 probe
tasks; one demo SAE family; 4 comparisons; one SAE-feature analysis on 2 models x layers [1, 3, 5].
config.yaml: Gemma-2-2B and PaliGemma-2 decoders (26 blocks), the PaliGemma tower (27 blocks); 8 decoder
probe tasks and 2 vision tasks; Gemma Scope fused into extraction (extraction.fused_sae).
"""

from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from repshift.config import targets as T

ROOT = Path(__file__).resolve().parents[3]


def _load(name):
    cfg = yaml.safe_load((ROOT / name).read_text())
    validate(cfg, str(ROOT / "rules" / "config.schema.yaml"))
    return cfg


@pytest.fixture(scope="module")
def demo():
    return _load("config/demo.yaml")


@pytest.fixture(scope="module")
def real():
    return _load("config.yaml")


def test_demo_train_probe_jobs(demo):
    tables = T.all_probe_tables(demo)
    # categories, modality, brightness: 6 decoder blocks each; brightness-vision: the tower's 2 blocks
    assert len(tables) == 6 + 6 + 6 + 2
    assert tables[:2] == [
        "demo/results/probes/categories/layer-0.tsv",
        "demo/results/probes/categories/layer-1.tsv",
    ]
    assert tables[-1] == "demo/results/probes/brightness-vision/layer-1.tsv"
    # the layer sweep draws only semantic labels on decoder streams
    main = T.all_probe_tables(demo, T.main_probe_tasks(demo))
    assert main == [f"demo/results/probes/categories/layer-{i}.tsv" for i in range(6)]


def test_demo_inputs_of_one_probe_job(demo):
    assert T.probe_inputs(demo, "categories") == {
        "demo-llava": "demo/results/activations/demo-llava/demo-categories",
        "demo-llm": "demo/results/activations/demo-llm/demo-categories",
        "demo-paligemma": "demo/results/activations/demo-paligemma/demo-categories",
    }
    assert T.probe_inputs(demo, "brightness-vision") == {
        "demo-paligemma-vision": "demo/results/activations/demo-paligemma-vision/demo-brightness"
    }
    cross = T.cross_layer_inputs(demo, "categories")
    assert cross["weights"] == [f"demo/results/probes/categories/weights/layer-{i}" for i in range(6)]
    assert cross["demo-llava"] == "demo/results/activations/demo-llava/demo-categories"
    assert set(cross) == {"weights", "demo-paligemma", "demo-llava"}


def test_demo_task_groups_and_figures(demo):
    assert T.cross_modal_tasks(demo) == ["categories"]
    assert T.attribute_tasks(demo) == ["brightness", "brightness-vision"]
    assert T.vision_tasks(demo) == ["brightness-vision"]
    assert T.curve_tasks(demo) == ["categories", "brightness", "brightness-vision"]  # modality is not a label
    assert T.probe_figures(demo) == [
        "demo/results/figs/cross_modal_matrix.pdf",
        "demo/results/figs/attribute_probes.pdf",
        "demo/results/figs/learning_curves.pdf",
    ]
    assert T.cross_layer_tables(demo) == ["demo/results/probes/categories/cross_modal_layers.tsv"]


def test_demo_sae_stage(demo):
    assert len(T.extraction_pairs(demo)) == 12
    assert T.all_code_dirs(demo) == [
        "demo/results/sae/demo-sae/demo-llava/demo-categories",
        "demo/results/sae/demo-sae/demo-llm/demo-categories",
        "demo/results/sae/demo-sae/demo-llm/prompts-multilingual",
        "demo/results/sae/demo-sae/demo-llm/prompts-original",
        "demo/results/sae/demo-sae/demo-paligemma/demo-categories",
        "demo/results/sae/demo-sae/demo-paligemma/prompts-multilingual",
        "demo/results/sae/demo-sae/demo-paligemma/prompts-original",
    ]
    assert T.all_shift_tables(demo)[0] == "demo/results/sae/shift/llm-vs-paligemma.tsv"
    assert T.all_shift_tables(demo, latents=True)[1] == "demo/results/sae/shift/llm-vs-llava.latents.tsv"
    assert T.all_spliced_tables(demo) == [
        f"demo/results/sae/spliced/demo-sae/{m}/demo-categories.tsv"
        for m in ("demo-llava", "demo-llm", "demo-paligemma")
    ]
    assert (
        T.sae_inputs(demo, "demo-sae", "demo-llava") == "demo/data/saes/demo-sae"
    )  # one job fits all layers
    assert T.sae_dirs(demo, "demo-sae", "demo-llm")[5] == "demo/data/saes/demo-sae/layer-5"
    assert T.sae_train_acts(demo, "demo-sae") == "demo/results/activations/demo-llm/demo-categories"
    assert T.comparison_codes(demo, "llm-vs-paligemma-prompts", "adapted") == (
        "demo/results/sae/demo-sae/demo-paligemma/prompts-original"
    )
    assert T.fused_inputs(demo, "demo-llm", "demo-categories") == []
    assert T.fused_params(demo, "demo-llm", "demo-categories") == {}


def test_demo_sae_feature_jobs(demo):
    probe = T.all_sae_feature_tables(demo, "probe")
    assert len(probe) == 2 * 3
    assert probe[0] == "demo/results/sae_features/cifar-demo/demo-paligemma/layer-1.probe.tsv"
    targets = T.sae_feature_targets(demo)
    assert targets[0] == "demo/results/figs/sae_features.pdf" and len(targets) == 1 + 6
    assert targets[-1] == "demo/results/sae_features/cifar-demo/demo-llava/layer-5.class_features.tsv"
    assert T.sae_feature_inputs(demo, "cifar-demo", "demo-llava") == {
        "codes": "demo/results/sae/demo-sae/demo-llava/demo-cifar100",
        "manifest": "demo/data/datasets/demo-cifar100.tsv",
        "acts": "demo/results/activations/demo-llava/demo-cifar100",
    }
    params = T.sae_feature_params(demo, "cifar-demo", T.CLASS_FEATURE_KEYS)
    assert params == {
        "dataset": "demo-cifar100",
        "max_image_fraction": 0.25,
        "n_top": 5,
        "sae": "demo-sae",
        "top_k": 5,
    }
    assert list(params) == sorted(params)  # canonical key order


def test_demo_data_inputs(demo):
    assert T.coco_files(demo) == {
        "instances": "demo/data/coco/annotations/instances_val2017.json",
        "captions": "demo/data/coco/annotations/captions_val2017.json",
        "images": "demo/data/coco/val2017",
    }
    assert T.cifar_dir(demo) == "demo/data/cifar100/cifar-100-python"
    assert T.dataset_images(demo, "demo-cifar100") == "demo/data/datasets/demo-cifar100/images"
    assert T.dataset_images(demo, "prompts-original") == []
    assert T.dataset_images(demo, "demo-brightness") == "demo/data/coco/val2017"
    assert T.model_dir(demo, "demo-llava") == "demo/data/models/demo-llava"
    assert T.demo_base_dir(demo, "demo-llava") == "demo/data/models/demo-llm"
    assert T.demo_base_dir(demo, "demo-llm") == []
    assert T.attribute_contact_sheets(demo) == ["demo/results/figs/datasets/demo-brightness.png"]


def test_demo_token_partners(demo):
    partners = T.token_partners(demo, "demo-paligemma", "prompts-original")
    assert list(partners) == ["demo-llm"]
    assert partners["demo-llm"]["location"] == "demo/data/models/demo-llm"
    assert T.token_partner_dirs(demo, "demo-llm", "demo-categories") == [
        "demo/data/models/demo-llava",
        "demo/data/models/demo-paligemma",
    ]
    assert T.token_partners(demo, "demo-llm", "demo-brightness") == {}


def test_demo_default_targets(demo):
    t = T.default_targets(demo)
    assert t[:4] == [
        f"demo/results/figs/{n}.pdf"
        for n in ("layer_sweep", "probe_tasks", "latent_density", "latents_shift")
    ]
    # 4 main figures + 3 probe companions + 2 pixel baselines + 4 VLM-SAE figures + 7 SAE-feature targets
    # + 1 contact sheet
    assert len(t) == 4 + 3 + 2 + 4 + 7 + 1
    # without comparisons the SAE-latent figures would be empty: not asked for
    bare = T.default_targets({**demo, "comparisons": {}})
    assert not [x for x in bare if "latent_density" in x or "latents_shift" in x] and len(bare) == len(t) - 2


def test_demo_wildcard_regexes(demo):
    w = T.wildcard_regexes(demo)
    assert (
        w["comparison"]
        == "llm-vs-paligemma|llm-vs-llava|llm-vs-paligemma-prompts|llm-vs-paligemma-multilingual"
    )
    assert w["task"] == "categories|modality|brightness|brightness-vision"
    assert T.name_regex(demo, "saes", source="pretrained") == "(?!x)x"  # never matches
    assert T.name_regex(demo, "models", source="local") == "demo-paligemma-vision"


def test_real_train_probe_jobs(real):
    tables = T.all_probe_tables(real)
    assert len(tables) == 8 * 26 + 2 * 27  # 8 decoder tasks over 26 blocks, 2 vision tasks over 27
    assert "results/probes/categories-vision/layer-26.tsv" in tables
    assert "results/probes/categories/layer-26.tsv" not in tables
    assert T.probe_inputs(real, "categories") == {
        "gemma2-2b": "results/activations/gemma2-2b/coco-categories",
        "paligemma2-3b": "results/activations/paligemma2-3b/coco-categories",
    }


def test_real_fused_sae_reads_codes_from_activation_folders(real):
    # extraction.fused_sae: every encoded pair keeps its codes in the activation folder (no encode_sae job)
    assert T.all_code_dirs(real) == [
        f"results/activations/{m}/{d}"
        for m in ("gemma2-2b", "paligemma2-3b")
        for d in ("coco-categories", "prompts-multilingual", "prompts-original")
    ]
    assert (
        T.codes_dir(real, "gemma-scope", "paligemma2-3b", "cifar100")
        == "results/activations/paligemma2-3b/cifar100"
    )
    saes = T.fused_inputs(real, "paligemma2-3b", "cifar100")
    # one marker per (SAE, model) over its 26 fetched layer folders, which the marker's job reads
    assert saes == "data/saes/gemma-scope/fetched-paligemma2-3b.json"
    layers = T.sae_dirs(real, "gemma-scope", "paligemma2-3b")
    assert len(layers) == 26 and layers[12] == "data/saes/gemma-scope/layer-12"
    params = T.fused_params(real, "gemma2-2b", "coco-categories")
    assert params["sae"] == "gemma-scope" and params["sae_dirs"][25] == "data/saes/gemma-scope/layer-25"
    assert T.fused_inputs(real, "paligemma2-3b-vision", "coco-categories") == []
    assert len(T.all_spliced_tables(real)) == 6  # spliced.datasets: comparisons -> 2 models x 3 datasets


def test_real_hub_models_have_no_input_folder(real):
    assert T.model_dir(real, "gemma2-2b") == []
    assert T.coco_files(real)["images"] == "data/coco/val2017"
    assert T.sae_feature_targets(real)[1:] == [
        f"results/sae_features/cifar100-paligemma/paligemma2-3b/layer-{i}.class_features.tsv"
        for i in (6, 10, 17)
    ]


def test_pixel_baselines_one_per_attribute_task(demo):
    # demo: two attribute tasks (brightness on the decoder, brightness-vision on the tower), same dataset
    assert T.pixel_baseline_tables(demo) == [
        "demo/results/probes/brightness/pixel_baseline.tsv",
        "demo/results/probes/brightness-vision/pixel_baseline.tsv",
    ]
    assert T.pixel_baseline_inputs(demo, "brightness") == {
        "manifest": "demo/data/datasets/demo-brightness.tsv",
        "images": "demo/data/coco/val2017",
    }
