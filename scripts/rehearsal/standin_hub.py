"""Build the rehearsal's stand-ins: python scripts/rehearsal/standin_hub.py OUT_DIR [CONFIG] [--imagenet N_VAL]

OUT_DIR/hf/hub      a Hugging Face cache (HF_HUB_CACHE) with tiny models under CONFIG's repo ids (default
                    config.yaml) and its pretrained SAEs in each release's own format (see repshift.demo.standin)
OUT_DIR/archives    val2017.zip, annotations_trainval2017.zip, cifar-100-python.tar.gz
OUT_DIR/imagenet    with --imagenet N_VAL: a stand-in ILSVRC-2012 tree, N_VAL val images per class
Prints the REPSHIFT_STANDIN_SAE_SHAPE value the SAE loader needs (empty when no release needs a width override).
"""

import argparse
import logging
from pathlib import Path

import yaml

from repshift.demo.standin import (
    build_standin_archives,
    build_standin_hub,
    build_standin_imagenet,
    sae_shape_env_value,
)

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("config", nargs="?", default="config.yaml", help="relative to the repository root")
    parser.add_argument("--imagenet", type=int, default=0, metavar="N_VAL", help="build a stand-in ImageNet")
    args = parser.parse_args()
    config = yaml.safe_load((ROOT / args.config).read_text(encoding="utf-8"))
    summary = build_standin_hub(args.out / "hf" / "hub", config, args.out / "work")
    build_standin_archives(args.out / "archives")
    if args.imagenet:
        build_standin_imagenet(args.out / "imagenet", n_val=args.imagenet)
    print(sae_shape_env_value(summary))


if __name__ == "__main__":
    main()
