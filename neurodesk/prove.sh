#!/usr/bin/env bash
# Prove the Neurodesk recipe: generate its Dockerfile with neurodocker (bidsstats/build.sh), build it
# with ../shared/container/build-and-run.sh and run it: --version and the built-in demo.
# usage: neurodesk/prove.sh [IMAGE_TAG]   (run from anywhere; needs what build-and-run.sh needs)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-localhost/bidsstats:0.1.0}
recipe=$repo/neurodesk/bidsstats
bash "$recipe/build.sh"
ctx=$(mktemp -d "${TMPDIR:-/tmp}/neurodesk-bidsstats.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
cp "$recipe/bidsstats_0.1.0.Dockerfile" "$ctx/Dockerfile"
cp "$recipe/README.md" "$recipe"/bids_stats-*.whl "$ctx/"
bash "$repo/../shared/container/build-and-run.sh" "$tag" "$ctx" -- --version
mkdir "$ctx/out"
bash "$repo/../shared/container/build-and-run.sh" "$tag" "$ctx" -v "$ctx/out:/out" -- demo /out/demo --subjects 3
test -s "$ctx/out/demo/out/report.html"
echo "neurodesk recipe: generated, built and ran (image $tag, $(podman image inspect --format '{{.Size}}' "$tag" | awk '{printf "%d MB", $1 / 1e6}'))"
