"""Shared test setup: offline, CPU, deterministic."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


# --- session fixtures: tiny real models, built once --------------------------------------------------
N_LAYERS = 4
PERTURB_FROM = 2


@pytest.fixture(scope="session")
def demo_model_dirs(tmp_path_factory):
    """Tiny random-weight Gemma2 LLM and PaliGemma / LLaVA VLMs whose decoders copy it up to block 2."""
    from repshift.demo.models import build_demo_llm, build_demo_vlm

    root = tmp_path_factory.mktemp("models")
    llm = build_demo_llm(root / "llm", seed=0, num_hidden_layers=N_LAYERS)
    out = {"llm": llm}
    for arch in ("paligemma", "llava", "llava-next"):
        out[arch] = build_demo_vlm(root / arch, base_dir=llm, arch=arch, perturb_from=PERTURB_FROM, seed=0)
    return out


@pytest.fixture(scope="session")
def model_specs(demo_model_dirs):
    from repshift.config import ModelSpec

    fam = {"llm": "causal-lm", "paligemma": "paligemma", "llava": "llava", "llava-next": "llava-next"}
    prompt = {"llm": "", "paligemma": "caption en", "llava": "Describe the image.", "llava-next": "Describe."}
    return {
        k: ModelSpec(
            name=f"demo-{k}",
            family=fam[k],
            source="local",
            path=str(p),
            num_layers=N_LAYERS,
            image_prompt=prompt[k],
        )
        for k, p in demo_model_dirs.items()
    }


@pytest.fixture(scope="session")
def adapters(model_specs):
    from repshift.models.adapter import load_adapter

    return {k: load_adapter(spec, device="cpu") for k, spec in model_specs.items()}


@pytest.fixture(scope="session")
def vision_adapters(demo_model_dirs):
    """The vision towers of the demo VLMs as their own stream (layer L = output of tower block L)."""
    from repshift.config import ModelSpec
    from repshift.models.adapter import load_adapter

    return {
        arch: load_adapter(
            ModelSpec(
                name=f"demo-{arch}-vision",
                family=arch,
                source="local",
                path=str(demo_model_dirs[arch]),
                num_layers=2,
                stream="vision",
                image_prompt="caption en",
            ),
            device="cpu",
        )
        for arch in ("paligemma", "llava")
    }
