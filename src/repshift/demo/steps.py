"""Rule entry points of the demo preset's generators."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from repshift.formats import layout
from repshift.formats.atomic import atomic_dir
from repshift.formats.layout import layer_file
from repshift.runtime import step

log = logging.getLogger(__name__)


@step
def make_synthetic_coco(*, input, output, params, **_):
    """Generate the demo's synthetic COCO 2017-format dataset (images + instances + captions JSON)."""
    from repshift.demo.coco import make_synthetic_coco as make

    root = Path(params["root"])
    split = params["split"]
    staging = root.parent / f".{root.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    summary = make(
        staging,
        n_images=params["n_images"],
        seed=params["seed"],
        image_size=params["image_size"],
        split=split,
    )
    for key, src in (
        ("instances", f"annotations/instances_{split}.json"),
        ("captions", f"annotations/captions_{split}.json"),
    ):
        dest = Path(output[key])
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staging / src, dest)
    images = Path(output["images"])
    if images.exists():
        shutil.rmtree(images)
    shutil.move(staging / split, images)
    shutil.rmtree(staging, ignore_errors=True)
    log.info("synthetic COCO: %s", summary)


@step
def make_fake_cifar100(*, input, output, params, **_):
    """Write a small archive folder in the genuine CIFAR-100 python format (demo), deterministic from the seed."""
    from repshift.demo.cifar import make_fake_cifar100 as make

    syn = params.get("synthetic") or {}
    folder = make(
        params["root"],
        n_train=int(syn.get("n_train", 200)),
        n_test=int(syn.get("n_test", 100)),
        n_classes=int(syn.get("n_classes", 10)),
        seed=int(params["seed"]),
    )
    if Path(folder) != Path(output["folder"]):
        raise ValueError(f"wrote {folder}, not the rule's output {output['folder']}")


log = logging.getLogger(__name__)


@step
def make_demo_model(*, input, output, params, wildcards=None, **_):
    """Generate a tiny random-weight demo model (Gemma2 LLM, or a VLM whose decoder copies the demo LLM)."""
    # The family table names demo builders by string; importing their modules here puts them in this step's hash.
    from repshift.demo import models as demo_models
    from repshift.demo import qwen2_vl, smolvlm  # noqa: F401
    from repshift.models.families import DEMO_LLMS, build_demo_llm

    spec = params["spec"]
    demo = dict(spec["demo"])
    arch = demo.pop("arch")
    out = Path(output["model"])
    if arch in DEMO_LLMS:
        kwargs = {"num_hidden_layers": spec["num_layers"]}
        if "hidden_size" in demo:
            kwargs["hidden_size"] = demo["hidden_size"]
        build_demo_llm(arch, out, seed=params["seed"], **kwargs)
    else:
        demo_models.build_demo_vlm(
            out,
            base_dir=input["base"],
            arch=arch,
            perturb_from=demo["perturb_from"],
            perturb_scale=demo.get("perturb_scale", 0.5),
            seed=params["seed"],
        )


log = logging.getLogger(__name__)


@step
def train_demo_sae(*, input, output, params, **_):
    """Fit the demo's tiny JumpReLU SAEs, one per layer, on the demo LLM's text-token activations."""
    from repshift.demo import sae as demo_sae
    from repshift.formats.activations_h5 import read_activations

    train = params["train"]
    with atomic_dir(output["saes"]) as tmp:
        for layer in params["layers"]:
            acts = read_activations(layer_file(input["acts"], layer))
            tok = acts.tokens(np.flatnonzero(acts.modality == "text"))
            keep = tok.mask("text")  # BOS, pads and specials never enter SAE training
            demo_sae.train_demo_sae(
                tok.acts_TD[keep],
                tmp / layout.layer_name(layer),
                layer=int(layer),
                d_sae=int(train.get("d_sae", 256)),
                steps=int(train.get("steps", 300)),
                seed=int(params["seed"]),
                model_name=train["model"],
            )
