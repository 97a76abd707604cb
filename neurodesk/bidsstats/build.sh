#!/usr/bin/env bash
# Neurodesk recipe for bids-stats, in the neurocontainers style: neurodocker generates the
# Dockerfile. In a neurocontainers checkout this folder goes to recipes/bidsstats/ and
# ../main_setup.sh sets up the build; on its own (this repository) the same variables are set
# here and neurodocker comes from PyPI. neurodesk/prove.sh builds the result with
# ../shared/container/build-and-run.sh and runs it.
set -e

export toolName='bidsstats'
export toolVersion='0.1.0'
# Don't forget to update version change in README.md!!!!!

if [ "$1" != "" ]; then
    echo "Entering Debug mode"
    export debug=$1
fi

cd "$(dirname "$0")"
if [ -f ../main_setup.sh ]; then
    source ../main_setup.sh
else
    command -v neurodocker >/dev/null || python3 -m pip install --no-cache-dir 'neurodocker>=2,<3'
    export neurodocker_buildMode=docker neurodocker_buildExt=Dockerfile
    export imageName=${toolName}_${toolVersion}
    export mountPointList="/data /scratch /cvmfs /neurodesktop-storage"
fi

# The package: a wheel of the bids-stats source next to the Dockerfile (BIDS_STATS_SRC: a checkout,
# by default the repository this recipe lives in).
src=${BIDS_STATS_SRC:-$(cd ../.. && pwd)}
wheel=bids_stats-${toolVersion}-py3-none-any.whl
rm -f "$wheel"
python3 -m pip wheel --no-deps --no-build-isolation --quiet -w . "$src" 2>/dev/null \
    || python3 -m pip wheel --no-deps --quiet -w . "$src"
test -f "$wheel"
venv=/opt/${toolName}-${toolVersion}

# PIP_CERT: a CA bundle for pip behind a TLS-intercepting proxy (build-and-run.sh passes one); empty elsewhere.
neurodocker generate ${neurodocker_buildMode} \
   --base-image debian:bookworm-slim \
   --pkg-manager apt \
   --arg PIP_CERT="" \
   --env DEBIAN_FRONTEND=noninteractive \
   --run="printf '#!/bin/bash\nls -la' > /usr/bin/ll" \
   --run="chmod +x /usr/bin/ll" \
   --run="mkdir -p ${mountPointList}" \
   --install python3 python3-venv ca-certificates \
   --copy ${wheel} /tmp/${wheel} \
   --run="if [ -n \"\$PIP_CERT\" ]; then set -- --cert \"\$PIP_CERT\"; else unset PIP_CERT; fi \
      && python3 -m venv ${venv} \
      && ${venv}/bin/pip install --no-cache-dir \"\$@\" "/tmp/${wheel}[dask]" \
      && ${venv}/bin/pip uninstall --yes pip \
      && rm /tmp/${wheel} \
      && find ${venv} -depth -type d -name tests -exec rm -rf {} +" \
   --env PATH=${venv}/bin:'$PATH' \
   --env MPLBACKEND=Agg MPLCONFIGDIR=/tmp/matplotlib XDG_CACHE_HOME=/tmp/.cache NILEARN_DATA=/tmp/nilearn_data \
   --env BIDS_STATS_CONTAINER=neurodesk/${toolName}:${toolVersion} \
   --env DEPLOY_BINS=bids-stats \
   --copy README.md /README.md \
   --workdir /tmp \
   --entrypoint bids-stats \
  > ${imageName}.${neurodocker_buildExt}

if [ "$1" != "" ] && [ -f ../main_build.sh ]; then
   ./../main_build.sh
fi
