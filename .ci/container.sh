#!/usr/bin/env bash
# Container part of CI (called by .ci/run after the tests): build the image with
# ../shared/container/build-and-run.sh and run it as users do:
#   1. `--version` and the built-in demo, through build-and-run.sh (as `docker run IMAGE ...` would);
#   2. a real dataset from ../shared/data mounted read-only, run as an unprivileged user on a
#      read-only root file system with no network (container/run-readonly.sh: how Apptainer runs
#      a .sif), and the same command on the host from .venv; the maps must agree
#      (container/compare_outputs.py).
# Skips, saying why, only when the builder cannot run here at all.
set -euo pipefail
cd "$(dirname "$0")/.."
builder=../shared/container/build-and-run.sh
skip() { echo "container checks SKIPPED: $*"; exit 0; }
[[ -f $builder ]] || skip "$builder not found (it comes with the project's shared folder)"
if ! command -v podman >/dev/null || ! command -v buildah >/dev/null; then
  # build-and-run.sh installs them with apt-get, which needs root
  [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null \
    || skip "podman/buildah are not installed and cannot be (needs root and apt-get)"
fi
image=localhost/bids-stats:ci
work=$(mktemp -d "${TMPDIR:-/tmp}/bids-stats-ci.XXXXXX")
trap 'rm -rf "$work"' EXIT
version=$(.venv/bin/python -c 'import bids_app; print(bids_app.__version__)')

echo "== container: build (layer cache: base image, dependency layer) and --version"
start=$SECONDS
bash "$builder" "$image" . -- --version | tee "$work/version.txt"
grep -qx "bids-stats $version" "$work/version.txt"
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "container: built and ran in $((SECONDS - start)) s; image size $((size / 1000000)) MB"

echo "== container: demo (docker run IMAGE demo /out/demo)"
start=$SECONDS
mkdir "$work/demo"
bash "$builder" "$image" . -v "$work/demo:/out" -- demo /out/demo | tee "$work/demo.txt"
test -s "$work/demo/demo/out/report.html"
test -s "$work/demo/demo/out/provenance.json"
echo "container: demo ran in $((SECONDS - start)) s"

data=$(realpath -q ../shared/data/wager2008_emoreg || true)
if [[ -z $data || ! -d $data ]]; then
  echo "container: real-data run SKIPPED: ../shared/data/wager2008_emoreg not found"
  exit 0
fi
echo "== container: wager2008 dataset level, data read-only, uid 1000, read-only root, no network"
model=one_sample_existing_maps.json
mkdir -m 777 "$work/ctr"
start=$SECONDS
container/run-readonly.sh "$image" -v "$data:/data:ro" -v "$PWD/models:/models:ro" -v "$work/ctr:/out" \
  -- /data /out dataset --model "/models/$model" --quiet
echo "container: real-data run took $((SECONDS - start)) s"
test "$(stat -c %u "$work/ctr/provenance.json")" = 1000
.venv/bin/bids-stats "$data" "$work/host" dataset --model "models/$model" --quiet
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
.venv/bin/python container/compare_outputs.py "$work/host" "$work/ctr" \
  --path "/data=$data" --path "/out=$work/host" --path "/models=$PWD/models" \
  --path "/opt/bids-stats/lib/python3.11/site-packages=$site"
