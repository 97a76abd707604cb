#!/bin/bash
# Submit one `subject` array task per participant, then one `dataset` job that starts when all succeeded.
#
#   container/slurm/submit.sh BIDS_DIR OUTPUT_DIR MODEL.json [SIF] [-- EXTRA bids-stats OPTIONS...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export BIDS=$(realpath "${1:?BIDS_DIR}") OUT=$(realpath -m "${2:?OUTPUT_DIR}") MODEL=$(realpath "${3:?MODEL}")
shift 3
sif=bids-stats.sif
if [[ ${1:-} && $1 != -- ]]; then sif=$1; shift; fi
if [[ ${1:-} == -- ]]; then shift; fi
export SIF=$(realpath -m "$sif")
export EXTRA="$*"
n=$(($(wc -l < "$BIDS/participants.tsv") - 1))
(( n > 0 )) || { echo "no participants in $BIDS/participants.tsv" >&2; exit 2; }
jid=$(sbatch --parsable --export=ALL --array="1-$n" "$here/bids-stats.sbatch")
sbatch --parsable --export=ALL --dependency="afterok:${jid%%;*}" "$here/bids-stats.sbatch"
echo "submitted: $n subject task(s) as job $jid, then the dataset job" >&2
