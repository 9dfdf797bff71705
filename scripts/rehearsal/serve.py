"""Serve the stand-in archives on 127.0.0.1, write the rehearsal config, run a command, stop the server.

    python scripts/rehearsal/serve.py ARCHIVE_DIR CONFIG_OUT -- snakemake ... --configfile CONFIG_OUT

CONFIG_OUT = config.yaml + scripts/rehearsal/overlay.yaml (merged key by key) + the loopback URLs and the
stand-in archives' size/md5/sha256 (coco.archives.val2017, coco.archives.annotations_trainval2017,
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


def rehearsal_config(archive_dir: Path, base_url: str) -> dict:
    """config.yaml + overlay.yaml, with each archive entry pointing at ``base_url`` and the stand-in's checksums."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    config = merge(config, yaml.safe_load((HERE / "overlay.yaml").read_text(encoding="utf-8")))
    for keys, (url_path, name) in ARCHIVES.items():
        entry = config
        for key in keys:
            entry = entry[key]
        entry.update(url=base_url + url_path, **archive_checksums(archive_dir / name))
    return config


def main() -> int:
    archive_dir, config_out = Path(sys.argv[1]), Path(sys.argv[2])
    command = sys.argv[sys.argv.index("--") + 1 :]
    # a fixed port: the URL is a rule param, so a new port would rerun the downloads and everything after them
    with serve(int(os.environ.get("REHEARSAL_PORT", "47017"))) as (base_url, state):
        for url_path, name in ARCHIVES.values():
            state.files[url_path] = (archive_dir / name).read_bytes()
        config = rehearsal_config(archive_dir, base_url)
        config_out.parent.mkdir(parents=True, exist_ok=True)
        config_out.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
        print(f"rehearsal: archives at {base_url}, config {config_out}", file=sys.stderr)
        return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
