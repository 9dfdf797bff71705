#!/usr/bin/env bash
# `make rehearsal`: the real config.yaml through the real `rule all`, offline, against a stand-in hub (tiny
# models under the real repo ids, SAEs in each release's own format) and stand-in COCO/CIFAR-100 archives served
# on 127.0.0.1. Only the overlay (sizes) plus the loopback URLs and checksums differ from the config.
# Environment (defaults: the main config's rehearsal):
#   REHEARSAL_CONFIG   the workflow config rehearsed           (config.yaml; e.g. config/llava-gemma.yaml)
#   REHEARSAL_OVERLAY  its size overlay                        (scripts/rehearsal/overlay.yaml)
#   REHEARSAL_DIR      everything goes here                    (build/rehearsal)
#   REHEARSAL_PORT     the loopback port of the archive server (47017; a rule param: keep it fixed per run)
#   REHEARSAL_IMAGENET val images per class of a stand-in ImageNet built under REHEARSAL_DIR/imagenet and set as
#                      imagenet.root (0: none)
# Arguments replace the target `all` (e.g. a dataset TSV); without them the run ends with REHEARSAL_DIR/report.html.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${REHEARSAL_DIR:-build/rehearsal}
CONFIG=${REHEARSAL_CONFIG:-config.yaml}
OVERLAY=${REHEARSAL_OVERLAY:-scripts/rehearsal/overlay.yaml}
IMAGENET=${REHEARSAL_IMAGENET:-0}
CORES=${CORES:-2}
BIN=${BIN:-.venv/bin}
export PYTHONPATH="$ROOT/scripts/rehearsal:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HOME="$ROOT/$OUT/hf" HF_HUB_CACHE="$ROOT/$OUT/hf/hub" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
if [ ! -f "$OUT/standin.done" ]; then
    "$BIN/python" scripts/rehearsal/standin_hub.py "$OUT" "$CONFIG" --imagenet "$IMAGENET" >"$OUT/sae_shape.txt"
    touch "$OUT/standin.done"
fi
export REPSHIFT_STANDIN_SAE_SHAPE="$(cat "$OUT/sae_shape.txt")"
IMAGENET_ARGS=()
if [ "$IMAGENET" != 0 ]; then IMAGENET_ARGS=(--imagenet "$OUT/imagenet"); fi
# --resources gpu: profiles/default allows one "GPU" job at a time; the stand-ins run on CPU, so the cores decide.
# --max-threads 1: the stand-ins' tensors are tiny, so a second thread per job only spins; one thread per job lets
# two jobs share 2 cores. --scheduler greedy: the ILP scheduler starts a solver process at every job end (seconds
# per job on 2 cores); which ready job starts first changes no output.
SECONDS=0
status=0
"$BIN/python" scripts/rehearsal/serve.py "$OUT/archives" "$OUT/config.yaml" --config "$CONFIG" \
    --overlay "$OVERLAY" "${IMAGENET_ARGS[@]}" -- \
    "$BIN/snakemake" --cores "$CORES" --resources gpu="$CORES" --max-threads 1 --scheduler greedy --configfile "$OUT/config.yaml" --keep-going \
    --rerun-incomplete "${@:-all}" || status=$?
# The whole run (no targets given) ends with the HTML report, as a user would make it.
if [ "$status" = 0 ] && [ $# = 0 ]; then
    "$BIN/snakemake" --configfile "$OUT/config.yaml" --report "$OUT/report.html" || status=$?
fi
echo "rehearsal: snakemake exited $status after ${SECONDS}s" >&2
exit $status
