"""Build the rehearsal's stand-ins: python scripts/rehearsal/standin_hub.py OUT_DIR

OUT_DIR/hf/hub      a Hugging Face cache (HF_HUB_CACHE) with tiny models under config.yaml's repo ids and
                    Gemma-Scope-format SAEs (see repshift.demo.standin)
OUT_DIR/archives    val2017.zip, annotations_trainval2017.zip, cifar-100-python.tar.gz
Prints the REPSHIFT_STANDIN_SAE_SHAPE value the SAE loader needs.
"""

import logging
import sys
from pathlib import Path

import yaml

from repshift.demo.standin import SAE_SHAPE_ENV, build_standin_archives, build_standin_hub

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(sys.argv[1])
    config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    summary = build_standin_hub(out / "hf" / "hub", config, out / "work")
    build_standin_archives(out / "archives")
    shapes = [f"{s['release']}={s['d_in']},{s['d_sae']}" for s in summary["saes"].values()]
    if len(shapes) > 1:
        raise SystemExit(f"{SAE_SHAPE_ENV} holds one release; the config has {len(shapes)}: {shapes}")
    print(shapes[0] if shapes else "")


if __name__ == "__main__":
    main()
