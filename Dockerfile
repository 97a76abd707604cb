# bids-stats as a BIDS App container.
#
#   docker build -t bids-stats .
#   docker run --rm -v /path/bids:/data:ro -v /path/out:/out -v /path/models:/models:ro \
#       bids-stats /data /out dataset --model /models/model.json
#   apptainer run docker-daemon://bids-stats:latest /data /out dataset --model ...
#
# Nothing is written outside the output folder and /tmp at run time, so the
# image also runs read-only (Apptainer) and as any user (docker run -u).
FROM debian:bookworm-slim

ARG VERSION=dev
LABEL org.opencontainers.image.title="bids-stats" \
      org.opencontainers.image.description="BIDS App running BIDS Stats Models: first-level fMRI GLMs to group inference, written as BIDS derivatives" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"

# apt-get clean: a debootstrap-made base (as built by ../shared/container) keeps the downloaded .deb files
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log

# The venv has no pip of its own (16 MB): installs below use the pip wheel Debian ships, pointed at it.
ENV VIRTUAL_ENV=/opt/bids-stats
ENV PATH="${VIRTUAL_ENV}/bin:${PATH}"
RUN python3 -m venv --without-pip "${VIRTUAL_ENV}" \
 && printf '#!/bin/sh\nexec /usr/bin/python3 %s/pip --python %s/bin/python "$@"\n' \
      "$(ls /usr/share/python-wheels/pip-*.whl)" "${VIRTUAL_ENV}" > /usr/local/bin/venv-pip \
 && chmod +x /usr/local/bin/venv-pip

# A CA bundle for pip behind a TLS-intercepting proxy; empty (unused) elsewhere.
# Build arguments are in the RUN environment, and pip reads PIP_CERT from there
# too: that is what reaches the isolated build of our own package, which
# --cert alone does not. An empty PIP_CERT is unset rather than passed to pip.
ARG PIP_CERT=""

# Dependencies first, in their own layer, so code changes rebuild in seconds. The [dask] extra is
# included: --dask-scheduler local:N, and Dask workers started from the image on a cluster (docs/hpc.md).
# Byte-code stays (imports take about three times as long without it: the image is read-only under
# Apptainer, so it would be compiled again at every start); test suites go (~150 MB).
# Only pyproject.toml here: a README edit must not invalidate the dependency layer.
COPY pyproject.toml /src/
RUN if [ -n "${PIP_CERT}" ]; then set -- --cert "${PIP_CERT}"; else unset PIP_CERT; fi \
 && python3 -c 'import tomllib; p = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + p["optional-dependencies"]["dask"]))' > /tmp/requirements.txt \
 && venv-pip install --no-cache-dir "$@" -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && find "${VIRTUAL_ENV}" -depth -type d -name tests -exec rm -rf {} +

COPY README.md /src/
COPY bids_app /src/bids_app
RUN if [ -n "${PIP_CERT}" ]; then set -- --cert "${PIP_CERT}"; else unset PIP_CERT; fi \
 && venv-pip install --no-cache-dir --no-deps "$@" /src \
 && rm -rf /src \
 && mkdir -p -m 1777 /home/bids

# Caches go to /tmp: writable under docker, docker -u and read-only Apptainer images.
# BIDS_STATS_CONTAINER: recorded as GeneratedBy.Container in dataset_description.json.
ENV HOME=/home/bids \
    BIDS_STATS_CONTAINER="bids-stats:${VERSION}" \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache \
    NILEARN_DATA=/tmp/nilearn_data \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp

ENTRYPOINT ["bids-stats"]
