"""Qwen2-VL's processor without torchvision: a hub-layout folder loads through the family row, and the processor
expands ``<|image_pad|>`` as Qwen2-VL documents (grid_t * grid_h * grid_w / merge_size**2 per image)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repshift.demo.qwen2_vl import build_demo_qwen2_tokenizer
from repshift.models.families import FAMILIES
from repshift.models.processors import Qwen2VLImageTextProcessor, load_processor

#: preprocessor_config.json as the hub Qwen2-VL-2B-Instruct repository lays it out (legacy keys min/max_pixels)
HUB_PREPROCESSOR = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2VLProcessor",
}


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen2-vl-hub")
    build_demo_qwen2_tokenizer().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(HUB_PREPROCESSOR))
    return folder


def test_hub_layout_loads_without_torchvision_and_expands_image_pad(hub_folder):
    processor = load_processor(FAMILIES["qwen2-vl"], hub_folder)
    assert isinstance(processor, Qwen2VLImageTextProcessor)
    ip = processor.image_processor
    assert (ip.patch_size, ip.merge_size, ip.size["shortest_edge"], ip.size["longest_edge"]) == (
        14,
        2,
        3136,
        12845056,
    )
    text = "<|vision_start|><|image_pad|><|vision_end|>Describe."
    # (height, width): factor 28; 224x224 stays (16x16 patches); 100x300 -> round(3.57)=4, round(10.7)=11 units
    # of 28 px = 112x308 (8x22 patches); both within [min, max] pixels
    images = [Image.new("RGB", (224, 224)), Image.new("RGB", (300, 100))]
    enc = processor(text=[text, text], images=images, return_tensors="pt", padding=True)
    assert enc["image_grid_thw"].tolist() == [[1, 16, 16], [1, 8, 22]]
    # one row per 14x14 patch, 3 channels x 2 frames x 14 x 14 values each
    assert tuple(enc["pixel_values"].shape) == (16 * 16 + 8 * 22, 3 * 2 * 14 * 14)
    ids = enc["input_ids"].numpy()
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    # 256 / 4 = 64 and 176 / 4 = 44 image tokens
    assert (ids == image_id).sum(1).tolist() == [64, 44]
    np.testing.assert_array_equal(enc["mm_token_type_ids"].numpy() == 1, ids == image_id)
    start = processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    first = ids[0].tolist()
    assert first[first.index(start) + 1 : first.index(start) + 65] == [image_id] * 64


def test_saved_processor_reads_as_a_hub_qwen2_vl_processor(hub_folder, tmp_path):
    load_processor(FAMILIES["qwen2-vl"], hub_folder).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "Qwen2VLProcessor"
    assert saved["image_processor"]["image_processor_type"] == "Qwen2VLImageProcessor"
    again = load_processor(FAMILIES["qwen2-vl"], tmp_path)
    assert again.image_processor.size["longest_edge"] == 12845056


def test_processor_needs_the_pil_image_processor():
    from transformers import SiglipImageProcessorPil

    with pytest.raises(TypeError, match="Qwen2VLImageProcessorPil, got SiglipImageProcessorPil"):
        Qwen2VLImageTextProcessor(SiglipImageProcessorPil(), build_demo_qwen2_tokenizer())


def test_text_only_family_has_no_processor():
    with pytest.raises(ValueError, match="causal-lm is text-only"):
        load_processor(FAMILIES["causal-lm"], "anywhere")


def test_every_processor_loader_is_a_function_of_the_processors_module():
    from repshift.models import processors

    loaders = {f.name: f.processor_loader for f in FAMILIES.values() if f.processor_loader}
    assert loaders == {"qwen2-vl": "load_qwen2_vl_processor"}
    for name in loaders.values():
        assert callable(getattr(processors, name))


def test_editing_the_processors_module_reruns_extraction_not_probes(tmp_path):
    import shutil

    import repshift
    from repshift.formats.provenance import step_code_hash

    root = tmp_path / "repshift"
    shutil.copytree(Path(repshift.__file__).parent, root, ignore=shutil.ignore_patterns("__pycache__"))
    steps = ("extract_activations", "train_probe")
    before = {s: step_code_hash(s, root) for s in steps}
    with open(root / "models/processors.py", "a") as f:
        f.write("\n# an edit\n")
    after = {s: step_code_hash(s, root) for s in steps}
    assert after["extract_activations"] != before["extract_activations"]
    assert after["train_probe"] == before["train_probe"]
