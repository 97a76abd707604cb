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

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/bids-stats
ENV PATH="${VIRTUAL_ENV}/bin:${PATH}"
RUN python3 -m venv "${VIRTUAL_ENV}"

# A CA bundle for pip behind a TLS-intercepting proxy; empty (unused) elsewhere.
# Build arguments are in the RUN environment, and pip reads PIP_CERT from there
# too: that is what reaches the isolated build of our own package, which
# --cert alone does not. An empty PIP_CERT is unset rather than passed to pip.
ARG PIP_CERT=""

# Dependencies first, in their own layer, so code changes rebuild in seconds.
COPY pyproject.toml README.md /src/
RUN if [ -n "${PIP_CERT}" ]; then set -- --cert "${PIP_CERT}"; else unset PIP_CERT; fi \
 && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && pip install --no-cache-dir "$@" -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && find "${VIRTUAL_ENV}" -depth -type d -name tests -exec rm -rf {} +  # ~150 MB of test suites

COPY bids_app /src/bids_app
RUN if [ -n "${PIP_CERT}" ]; then set -- --cert "${PIP_CERT}"; else unset PIP_CERT; fi \
 && pip install --no-cache-dir --no-deps "$@" /src \
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
