"""The demo chain shared by the rule-script tests, run through the real rule scripts once per session
(``chain`` fixture in conftest.py): synthetic COCO -> manifest -> demo LLM + PaliGemma -> token-level
activations -> demo SAEs. Tests read it and write their own outputs into their own folders, never into it.
"""

CHAIN_LAYERS = [0, 1, 2, 3]
CHAIN_SAE_LAYERS = [1, 3]
CHAIN_K = 2  # first perturbed block of the demo VLM
CHAIN_ARCH = {"llm": "gemma2", "vlm": "paligemma"}
CHAIN_SPEC = {
    "modality": "paired",
    "classes": ["cat", "dog", "person", "car"],
    "level": "category",
    "exclusive": True,
    "n_per_class": 6,
    "caption": "first",
    "folds": 3,
}
CHAIN_EXTRACTION = {
    "layers": "all",
    "dtype": "auto",
    "store_dtype": "float32",
    "batch_size": 8,
    "max_tokens": 64,
    "device": "cpu",
}


def chain_model_spec(arch):
    """The ``models`` entry of a demo model of the chain (gemma2, paligemma or llava)."""
    if arch == "gemma2":
        return {"family": "causal-lm", "source": "demo", "num_layers": 4, "demo": {"arch": "gemma2"}}
    return {
        "family": arch,
        "source": "demo",
        "num_layers": 4,
        "image_prompt": "caption en",
        "demo": {"arch": arch, "base": "llm", "perturb_from": CHAIN_K, "perturb_scale": 0.5},
    }


def _data(run, root):
    coco_root = root / "coco"
    coco = {
        "instances": coco_root / "annotations/instances_val2017.json",
        "captions": coco_root / "annotations/captions_val2017.json",
        "images": coco_root / "val2017",
    }
    run(
        "make_synthetic_coco",
        output=coco,
        params={"root": str(coco_root), "split": "val2017", "seed": 0, "n_images": 64, "image_size": 48},
    )
    manifest = {"manifest": root / "datasets/cats.tsv", "meta": root / "datasets/cats.json"}
    run(
        "build_dataset",
        input=coco,
        output=manifest,
        params={"spec": CHAIN_SPEC, "split": "val2017", "seed": 0},
        wildcards={"dataset": "cats"},
    )
    return coco, manifest


def _models_and_acts(run, root, coco, manifest):
    models, acts = {}, {}
    for name, arch in CHAIN_ARCH.items():
        models[name] = root / "data/models" / name
        run(
            "make_demo_model",
            input={"base": str(models["llm"])} if arch != "gemma2" else {},
            output={"model": models[name]},
            params={"spec": chain_model_spec(arch), "seed": 0},
            wildcards={"model": name},
        )
    for name, arch in CHAIN_ARCH.items():
        acts[name] = root / "results/activations" / name / "cats"
        run(
            "extract_activations",
            input={"manifest": manifest["manifest"], "model": str(models[name]), "images": coco["images"]},
            output={"acts": acts[name]},
            params={
                "spec": chain_model_spec(arch),
                "layers": CHAIN_LAYERS,
                "tokens": True,
                "extraction": CHAIN_EXTRACTION,
                "image_dir": str(coco["images"]),
            },
            wildcards={"model": name, "dataset": "cats"},
        )
    return models, acts


def build(run, root):
    """Run the chain into ``root``: coco, manifest, models, acts (by llm/vlm), sae_root, sae_dirs (by layer)."""
    coco, manifest = _data(run, root)
    models, acts = _models_and_acts(run, root, coco, manifest)
    sae_root = root / "data/saes/demo"
    run(
        "train_demo_sae",
        input={"acts": acts["llm"]},
        output={"saes": sae_root},
        params={
            "train": {"model": "llm", "dataset": "cats", "d_sae": 64, "steps": 100},
            "layers": CHAIN_SAE_LAYERS,
            "seed": 0,
        },
        wildcards={"sae": "demo"},
    )
    return {
        "coco": coco,
        "manifest": manifest,
        "models": models,
        "acts": acts,
        "sae_root": sae_root,
        "sae_dirs": {layer: str(sae_root / f"layer-{layer}") for layer in CHAIN_SAE_LAYERS},
    }
