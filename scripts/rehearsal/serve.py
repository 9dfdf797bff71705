"""Serve the stand-in archives on 127.0.0.1, write the rehearsal config, run a command, stop the server.

    python scripts/rehearsal/serve.py ARCHIVE_DIR CONFIG_OUT [--config CONFIG] [--overlay OVERLAY] [--imagenet DIR] \
        -- snakemake ... --configfile CONFIG_OUT

CONFIG_OUT = CONFIG (default config.yaml) + OVERLAY (default scripts/rehearsal/overlay.yaml; merged key by key)
+ the loopback URLs and the stand-in archives' size/md5/sha256 (coco.archives.val2017, coco.archives.annotations_trainval2017,
cifar100.archive); COCO and CIFAR-100 keep ``source: download``, so the download rules run as they would for
real. Exits with the command's status.
"""

import os
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from loopback_http import serve  # noqa: E402

from repshift.demo.standin import archive_checksums  # noqa: E402


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return out


#: Config entry (key path) -> (URL path on the loopback server, archive file name under ARCHIVE_DIR).
ARCHIVES = {
    ("coco", "archives", "val2017"): ("/zips/val2017.zip", "val2017.zip"),
    ("coco", "archives", "annotations_trainval2017"): (
        "/annotations/annotations_trainval2017.zip",
        "annotations_trainval2017.zip",
    ),
    ("cifar100", "archive"): ("/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz"),
}


def rehearsal_config(
    archive_dir: Path,
    base_url: str,
    *,
    config: str | os.PathLike = ROOT / "config.yaml",
    overlay: str | os.PathLike = HERE / "overlay.yaml",
    imagenet: str | os.PathLike | None = None,
) -> dict:
    """``config`` + ``overlay``, with each archive entry pointing at ``base_url`` and the stand-in's checksums
    (and ``imagenet.root`` at the stand-in ImageNet, when given). Relative paths are from the repository root."""
    config = yaml.safe_load((ROOT / config).read_text(encoding="utf-8"))
    config = merge(config, yaml.safe_load((ROOT / overlay).read_text(encoding="utf-8")) or {})
    if imagenet is not None:
        config.setdefault("imagenet", {})["root"] = str(imagenet)
    for keys, (url_path, name) in ARCHIVES.items():
        entry = config
        for key in keys:
            entry = entry.get(key) if isinstance(entry, dict) else None
        if entry is None:  # e.g. line-of-sight.yaml has no cifar100 section: the schema default is never used
            continue
        entry.update(url=base_url + url_path, **archive_checksums(archive_dir / name))
    return config


def main() -> int:
    import argparse

    split = sys.argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive_dir", type=Path)
    parser.add_argument("config_out", type=Path)
    parser.add_argument("--config", default="config.yaml", help="the workflow config (default config.yaml)")
    parser.add_argument("--overlay", default=str(HERE / "overlay.yaml"), help="the rehearsal's size overlay")
    parser.add_argument("--imagenet", default=None, help="stand-in ImageNet root written to imagenet.root")
    args = parser.parse_args(sys.argv[1:split])
    archive_dir, config_out, command = args.archive_dir, args.config_out, sys.argv[split + 1 :]
    # a fixed port: the URL is a rule param, so a new port would rerun the downloads and everything after them
    with serve(int(os.environ.get("REHEARSAL_PORT", "47017"))) as (base_url, state):
        for url_path, name in ARCHIVES.values():
            state.files[url_path] = (archive_dir / name).read_bytes()
        config = rehearsal_config(
            archive_dir, base_url, config=args.config, overlay=args.overlay, imagenet=args.imagenet
        )
        config_out.parent.mkdir(parents=True, exist_ok=True)
        config_out.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
        print(f"rehearsal: archives at {base_url}, config {config_out}", file=sys.stderr)
        return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
