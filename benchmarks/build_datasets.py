"""Benchmark: building every dataset of config.yaml from a local val2017-sized synthetic COCO tree.

The tree is written by :func:`repshift.demo.coco.make_synthetic_coco` (5,000 JPEGs, the size of val2017; genuine
COCO 2017 JSON layout, all 80 categories, six of them drawn) into a temporary folder; the CIFAR-100 dataset is
built from a generated archive in the genuine format with the official test split's size (10,000 images, 100
classes). Then every entry of ``datasets:`` in config.yaml is built exactly as its rule builds it
(:func:`repshift.data.sources.build_dataset`, :func:`repshift.data.cifar.build_cifar100_dataset`,
:func:`repshift.data.prompts.build_prompt_dataset`), one after another in this process, each timed from reading
its inputs to the written manifest (COCO datasets read the annotation JSON once each, as each rule job does;
image datasets verify every selected JPEG; CIFAR writes its PNGs). Generation is timed apart.

Real val2017 images are ~640x480 JPEGs, larger than the synthetic ones (``--image-size``, default 64): image
validation decodes at reduced size (JPEG draft mode), so its cost grows less than the pixel count; the JSON part
(``load_coco_s``) is independent of it.

    .venv/bin/python benchmarks/build_datasets.py                  # ~1.5 min on 2 cores
    .venv/bin/python benchmarks/build_datasets.py --image-size 256 # closer to real image sizes, slower to generate

The last line is ``n_images=... generate_s=... load_coco_s=... <dataset>_s=... total_build_s=...``.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import yaml

from repshift.data import cifar as data_cifar
from repshift.data import coco as data_coco
from repshift.data import prompts as data_prompts
from repshift.data import sources
from repshift.demo import cifar as demo_cifar
from repshift.demo.coco import make_synthetic_coco

ROOT = Path(__file__).resolve().parents[1]


def load_config(path: Path) -> dict:
    from snakemake.utils import validate

    from repshift.config import check_config

    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    validate(cfg, str(ROOT / "rules" / "config.schema.yaml"))
    check_config(cfg)
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    ap.add_argument("--n-images", type=int, default=5000, help="synthetic COCO images (val2017 has 5,000)")
    ap.add_argument("--image-size", type=int, default=64, help="side of the synthetic images in pixels")
    ap.add_argument("--cifar-test", type=int, default=10_000, help="images in the generated CIFAR test split")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.config)
    split, seed = cfg["coco"]["split"], int(cfg.get("seed", 0))
    print(
        f"config {args.config.name}: {len(cfg['datasets'])} datasets; load average {os.getloadavg()[0]:.2f}"
    )

    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="repshift-bench-datasets-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        make_synthetic_coco(
            tmp / "coco", n_images=args.n_images, seed=seed, image_size=args.image_size, split=split
        )
        times["generate"] = time.perf_counter() - t0
        print(
            f"generated {args.n_images} synthetic COCO images ({args.image_size}px) in {times['generate']:.1f} s"
        )
        t0 = time.perf_counter()
        data_coco.load_coco(tmp / "coco" / "annotations", split)
        times["load_coco"] = time.perf_counter() - t0
        print(f"load_coco (instances + captions JSON, once): {times['load_coco']:.2f} s")
        if any(d.get("source") == "cifar100" for d in cfg["datasets"].values()):
            t0 = time.perf_counter()
            demo_cifar.make_fake_cifar100(
                tmp / "cifar", n_train=100, n_test=args.cifar_test, n_classes=100, seed=seed
            )
            times["generate_cifar"] = time.perf_counter() - t0

        out = tmp / "datasets"
        print(f"{'dataset':<24} {'source':<9} {'modality':<10} {'rows':>6} {'seconds':>8}")
        for name, d in cfg["datasets"].items():
            source = d.get("source", "coco")
            tsv = out / f"{name}.tsv"
            t0 = time.perf_counter()
            if source == "cifar100":
                df, _ = data_cifar.build_cifar100_dataset(
                    name, d, root=tmp / "cifar", out_dir=out / name, out_tsv=tsv, seed=seed
                )
            elif source == "prompts":
                df, _ = data_prompts.build_prompt_dataset(name, d, out_tsv=tsv, seed=seed)
            else:
                df, _ = sources.build_dataset(
                    name,
                    d,
                    annotations_dir=tmp / "coco" / "annotations",
                    image_dir=tmp / "coco" / split,
                    out_tsv=tsv,
                    seed=seed,
                    split=split,
                )
            times[name] = time.perf_counter() - t0
            print(f"{name:<24} {source:<9} {d['modality']:<10} {len(df):>6} {times[name]:>8.2f}")

    built = [n for n in cfg["datasets"]]
    total = sum(times[n] for n in built)
    print(f"all {len(built)} datasets: {total:.1f} s")
    pairs = {"n_images": args.n_images, "image_size": args.image_size}
    pairs |= {f"{k}_s": round(v, 2) for k, v in times.items()}
    pairs["total_build_s"] = round(total, 2)
    print(" ".join(f"{k}={v}" for k, v in pairs.items()))


if __name__ == "__main__":
    main()
