"""config.yaml's COCO datasets at their real sizes against the stand-in val2017 (its published per-category image
counts): the rehearsal's overlay shrinks the sizes for time, so this is where the real settings meet the counts."""

from pathlib import Path

import pytest
import yaml

from repshift.config.checks import validate_config
from repshift.data.coco import build_manifest, load_coco
from repshift.data.sources import spec_from_config
from repshift.demo.coco import DEMO_CATEGORIES, VAL2017_IMAGE_COUNTS, VAL2017_N_IMAGES, make_synthetic_coco

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_real_coco_dataset_sizes_fit_val2017_counts(tmp_path):
    make_synthetic_coco(
        tmp_path, n_images=VAL2017_N_IMAGES, image_size=32, category_image_counts=VAL2017_IMAGE_COUNTS
    )
    coco = load_coco(tmp_path / "annotations", "val2017")
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    cfg = validate_config(cfg, ROOT / "rules" / "config.schema.yaml")
    built = []
    for name, d in cfg["datasets"].items():
        if d.get("source", "coco") != "coco":
            continue
        spec = spec_from_config(name, d)
        if spec.level != "category" or not set(spec.classes) <= set(DEMO_CATEGORIES):
            continue  # the stand-in holds 6 of val2017's 80 categories (no supercategory is complete)
        df, _ = build_manifest(spec, coco, image_dir=tmp_path / "val2017", seed=cfg["seed"])
        if spec.modality != "attribute":  # attribute sets: n_base images, or build_manifest raises
            per_label = df.drop_duplicates("image_id").groupby("label").size()
            assert (per_label == spec.n_per_class).all(), (name, per_label.to_dict())
        built.append(name)
    # every category-level COCO dataset of config.yaml, the cat/dog/person sets near val2017's 184/177 included
    assert {"coco-categories", "coco-cat", "coco-dog", "coco-person", "coco-brightness"} <= set(built)
