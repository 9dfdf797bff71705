#!/usr/bin/env bash
# End-to-end SLURM test (`make test-slurm`): the demo DAG through a real single-node SLURM, checked against a
# local run of the same DAG. Debian, as root; ~10 minutes on 2 CPUs (~13 from a clean checkout).
#
#   1. start_slurm.sh: install slurm-wlm + munge if missing, write /etc/slurm/slurm.conf, start munged,
#      slurmctld, slurmd (PIDs recorded), wait for the node to be idle. If a controller already answers, use it.
#   2. the local reference: the demo preset with profiles/demo into $ROOT/local (kept between runs: Snakemake
#      redoes only what changed), or an existing results folder given as REPSHIFT_SLURM_REF (e.g. demo/results);
#   3. the same DAG through SLURM with profiles/slurm-ci into a fresh $ROOT/slurm; meanwhile the
#      extract_activations job of demo-paligemma (a GPU rule) is killed with SIGKILL (scancel --signal=KILL)
#      while it writes its HDF5 files: the profile's `retries` must resubmit it and the run must still finish;
#   4. every TSV under results/{figs,probes,sae} must match the reference numerically (compare_results.py), no
#      output may be left incomplete (a dry run finds nothing to do) and no temporary file may sit at a final path;
#   5. on exit (trap), the daemons this script started are stopped by their PIDs (stop_slurm.sh).
#
# Environment:
#   REPSHIFT_SLURM_TEST_DIR  work folder (default build/slurm-test; git-ignored)
#   REPSHIFT_SLURM_REF       reference results folder instead of running the local reference
#   REPSHIFT_SLURM_KILL=0    skip the kill-and-retry injection
#   REPSHIFT_SLURM_VICTIM    SLURM job comment prefix of the job to kill
#                            (default rule_extract_activations_wildcards_demo-paligemma_demo-categories:
#                            the largest demo extraction; its prompt-set jobs end too fast to be caught)
#   REPSHIFT_SLURM_PYTEST=1  also run tests/cluster (profile checks; a GPU job killed with retries 0, then
#                            resumed by a rerun); `make test-slurm` sets it
#   REPSHIFT_SLURM_KEEP=1    leave the cluster running afterwards (stop it with scripts/slurm/stop_slurm.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD

ROOT=${REPSHIFT_SLURM_TEST_DIR:-build/slurm-test}
VENV=${VENV:-.venv}
SNAKEMAKE=$VENV/bin/snakemake
PY=$VENV/bin/python
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
KILL=${REPSHIFT_SLURM_KILL:-1}

log() { echo "[slurm-test $(date +%T)] $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

[[ -x $SNAKEMAKE ]] || die "$SNAKEMAKE missing: run 'make install' first"

mkdir -p "$ROOT"
TIMES=$ROOT/timings.tsv
printf 'phase\tseconds\n' >"$TIMES"
t_phase=$SECONDS
phase_done() { printf '%s\t%d\n' "$1" $((SECONDS - t_phase)) >>"$TIMES"; log "$1: $((SECONDS - t_phase)) s"; t_phase=$SECONDS; }

# --- 1. cluster ---------------------------------------------------------------------------------------
STARTED=0
KILLER_PID=
cleanup() {
    local rc=$?
    [[ -n $KILLER_PID ]] && kill "$KILLER_PID" 2>/dev/null || true
    if [[ $STARTED == 1 && ${REPSHIFT_SLURM_KEEP:-0} != 1 ]]; then
        bash "$REPO/scripts/slurm/stop_slurm.sh" || true
    fi
    [[ -f $TIMES ]] && column -t "$TIMES" >&2 || true
    ((rc == 0)) && log "PASSED" || log "exit status $rc"
}
trap cleanup EXIT

if command -v scontrol >/dev/null && timeout 5 scontrol ping 2>/dev/null | grep -q "is UP"; then
    # never submit test jobs to a real cluster: only to the throwaway one start_slurm.sh configures
    grep -qF "# written by repshift scripts/slurm/start_slurm.sh" /etc/slurm/slurm.conf 2>/dev/null \
        || die "a SLURM controller answers but /etc/slurm/slurm.conf is not start_slurm.sh's: not submitting here"
    log "the throwaway SLURM is already up: using it (will not stop it)"
else
    [[ $(id -u) -eq 0 ]] || die "run as root (it installs and starts SLURM), or start it first: sudo scripts/slurm/start_slurm.sh"
    STARTED=1
    bash scripts/slurm/start_slurm.sh
fi
phase_done start_slurm

# --- 2. local reference -------------------------------------------------------------------------------
TARGET=results/figs/layer_sweep.pdf
if [[ -n ${REPSHIFT_SLURM_REF:-} ]]; then
    REF=$REPSHIFT_SLURM_REF
    [[ -f $REF/figs/layer_sweep.tsv ]] || die "REPSHIFT_SLURM_REF=$REF has no figs/layer_sweep.tsv"
    log "reference: $REF (given)"
else
    REF=$ROOT/local/results
    log "reference: local run into $ROOT/local"
    # the target goes before --config (which takes every following word)
    "$SNAKEMAKE" "$ROOT/local/$TARGET" --workflow-profile profiles/demo --cores 2 \
        --config "paths={data: $ROOT/local/data, results: $ROOT/local/results}" \
        >"$ROOT/local.log" 2>&1 || { tail -50 "$ROOT/local.log" >&2; die "local reference run failed ($ROOT/local.log)"; }
fi
phase_done local_reference

# --- 3. SLURM run, with a GPU job killed mid-run --------------------------------------------------------
OUT=$ROOT/slurm
rm -rf "$OUT" "$ROOT/slurm-logs" "$ROOT/kill.log"
mkdir -p "$OUT"

job_runs_script() { # jobid regex: does a process of this SLURM job have the regex in its command line?
    local p
    for p in $(scontrol listpids "$1" 2>/dev/null | awk 'NR > 1 {print $1}'); do
        [[ $p =~ ^[0-9]+$ && -r /proc/$p/cmdline ]] || continue
        tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -Eq "$2" && return 0
    done
    return 1
}

# The victim: the demo PaliGemma's extraction (a GPU rule, ~10 s of writing 6 layers' HDF5 files here).
VICTIM=${REPSHIFT_SLURM_VICTIM:-rule_extract_activations_wildcards_demo-paligemma_demo-categories}
kill_gpu_job_mid_run() {
    # Wait for the victim job to run its rule script and to have a temporary output file open, then SIGKILL
    # the job (scancel --signal=KILL: the job step and the batch script): partial files exist at that moment.
    local jid="" deadline=$((SECONDS + 900)) partial=""
    while ((SECONDS < deadline)); do
        jid=$(squeue -h -t R -o '%i %k' 2>/dev/null | awk -v v="$VICTIM" 'index($2, v) == 1 {print $1; exit}')
        [[ -n $jid ]] && break
        sleep 0.5
    done
    [[ -n $jid ]] || { echo "no running job matched $VICTIM" >"$ROOT/kill.log"; return; }
    while ((SECONDS < deadline)); do
        squeue -h -j "$jid" -t R 2>/dev/null | grep -q . || { echo "job $jid ended before it was killed" >"$ROOT/kill.log"; return; }
        # the rule script (.snakemake/scripts/tmpXXX.extract_activations.py) runs, writing hidden temp files
        if job_runs_script "$jid" 'extract_activations\.py'; then
            partial=$(find "$OUT/results/activations" -name '.*.tmp*' 2>/dev/null | sort)
            [[ -n $partial ]] && break
        fi
        sleep 0.1
    done
    scancel --signal=KILL "$jid"
    {
        echo "killed_job $jid"
        echo "comment $(squeue -h -j "$jid" -o %k)"
        echo "partial_files_at_kill:"
        echo "$partial"
    } >"$ROOT/kill.log"
}

if [[ $KILL == 1 ]]; then
    kill_gpu_job_mid_run &
    KILLER_PID=$!
fi
log "SLURM run into $OUT (profile profiles/slurm-ci)"
t_slurm=$SECONDS
"$SNAKEMAKE" "$OUT/$TARGET" --workflow-profile profiles/slurm-ci --slurm-logdir "$ROOT/slurm-logs" \
    --config "paths={data: $OUT/data, results: $OUT/results}" \
    >"$ROOT/slurm.log" 2>&1 || { tail -80 "$ROOT/slurm.log" >&2; die "SLURM run failed ($ROOT/slurm.log)"; }
SLURM_SECONDS=$((SECONDS - t_slurm))
if [[ -n $KILLER_PID ]]; then wait "$KILLER_PID" || true; KILLER_PID=; fi
phase_done slurm_run
n_sub=$(grep -c "has been submitted with SLURM jobid" "$ROOT/slurm.log" || true)
log "SLURM run: ${SLURM_SECONDS} s, $n_sub SLURM jobs submitted"

if [[ $KILL == 1 ]]; then
    cat "$ROOT/kill.log" >&2
    killed=$(awk '/^killed_job/ {print $2}' "$ROOT/kill.log")
    [[ -n $killed ]] || die "no GPU job was killed: $(cat "$ROOT/kill.log")"
    grep -q '\.tmp' "$ROOT/kill.log" || die "the GPU job was not killed while writing (no temporary files then)"
    grep -q "SLURM-job '$killed' failed" "$ROOT/slurm.log" || die "Snakemake did not see SLURM job $killed fail"
    grep -q "Trying to restart job" "$ROOT/slurm.log" || die "the killed job was not retried"
    log "killed SLURM job $killed was reported failed and retried; the run completed"
fi

# --- 4. checks ----------------------------------------------------------------------------------------
# --subset: the reference tree is reused between runs and may hold outputs of older versions of the DAG;
# completeness of the SLURM tree is checked by the dry run below.
"$PY" scripts/slurm/compare_results.py --subset "$REF" "$OUT/results" || die "SLURM results differ from the reference"

# A SIGKILLed job cannot clean up: its hidden temporary siblings (.NAME.XXXX.tmpdir / .NAME.XXXX.tmp.EXT) may
# stay behind. They never sit at an output path (the checks above passed); list them.
leftovers=$(find "$OUT" -name '.*.tmp*' -prune 2>/dev/null | grep -v '/logs/' || true)
[[ -z $leftovers ]] || log "note: temporary leftovers of the killed job (not outputs):
$leftovers"

"$SNAKEMAKE" "$OUT/$TARGET" --workflow-profile profiles/demo --cores 1 -n \
    --config "paths={data: $OUT/data, results: $OUT/results}" >"$ROOT/dryrun.log" 2>&1 \
    || { cat "$ROOT/dryrun.log" >&2; die "dry run after the SLURM run failed"; }
if ! grep -q "Nothing to be done" "$ROOT/dryrun.log"; then
    grep -A30 "^Reasons:" "$ROOT/dryrun.log" >&2 || cat "$ROOT/dryrun.log" >&2
    grep -q "Params have changed" "$ROOT/dryrun.log" \
        && log "(params include a hash of the package code: was src/repshift edited during the run?)"
    die "the SLURM run left jobs to redo ($ROOT/dryrun.log)"
fi
phase_done checks

# --- 5. optional: pytest recovery test (kill + resume by a rerun) --------------------------------------
# Only the rerun case: the retry case (test_killed_gpu_job_is_retried) is what step 3 just did on the whole DAG.
if [[ ${REPSHIFT_SLURM_PYTEST:-0} == 1 ]]; then
    REPSHIFT_SLURM_TEST=1 "$PY" -m pytest -q tests/cluster -p no:cacheprovider -k "not is_retried"
    phase_done pytest_cluster
fi
