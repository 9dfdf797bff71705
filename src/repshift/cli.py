"""Command line: run any workflow step with explicit paths, outside Snakemake.

    repshift steps
    repshift step extract_activations --input manifest=data/datasets/x.tsv --output acts=out/ \
        --params '{"spec": {...}, "layers": [0, 1]}'
"""

from __future__ import annotations

import argparse
import json
import sys

from repshift import runtime
from repshift.runtime import run_step


def _pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"expected name=path, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="repshift", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("steps", help="list the steps")
    p = sub.add_parser("step", help="run one step")
    p.add_argument("name", choices=sorted(runtime.STEPS))
    p.add_argument("--input", nargs="*", default=[], metavar="NAME=PATH")
    p.add_argument("--output", nargs="*", default=[], metavar="NAME=PATH")
    p.add_argument("--params", default="{}", help="JSON object, or @file.json")
    p.add_argument("--wildcards", default="{}", help="JSON object")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log", default=None)
    args = parser.parse_args(argv)
    if args.cmd == "steps":
        for name, fn in sorted(runtime.STEPS.items()):
            print(f"{name:24s} {(fn.__doc__ or '').strip().splitlines()[0]}")
        return 0
    raw = args.params
    params = json.load(open(raw[1:])) if raw.startswith("@") else json.loads(raw)
    run_step(
        runtime.STEPS[args.name],
        input=_pairs(args.input),
        output=_pairs(args.output),
        params=params,
        threads=args.threads,
        wildcards=json.loads(args.wildcards),
        log_file=args.log,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
