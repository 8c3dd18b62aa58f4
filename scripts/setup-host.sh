#!/usr/bin/env bash
# Set up this machine for amlocal, idempotently: a Docker engine that answers, mmdebstrap, a
# virtual environment (.venv) with amlocal, pytest, the azure extras and Chainer (for the process
# executor), and a base image for the environment recipes (pulled, or built from Debian packages
# where no registry is reachable). Linux (Debian/Ubuntu) with root or sudo for the system parts.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. System packages: the Docker engine, mmdebstrap (for a registry-free base image) and Chromium
#    (the web UI's browser tests drive it through Playwright, which downloads no browser here).
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. A Docker engine that answers. systemd where there is one; else dockerd in the background
#    with no bridge network (amlocal's containers run with network "none"; builds use the host's).
if ! docker info >/dev/null 2>&1; then
    if command -v systemctl >/dev/null 2>&1 && systemctl list-units >/dev/null 2>&1; then
        log "starting docker with systemctl"
        as_root systemctl start docker
    else
        log "starting dockerd (log: /tmp/amlocal-dockerd.log)"
        as_root sh -c 'nohup dockerd --iptables=false --ip6tables=false --bridge=none \
            --storage-driver=overlay2 >/tmp/amlocal-dockerd.log 2>&1 &'
    fi
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { log "the Docker engine did not come up; see /tmp/amlocal-dockerd.log"; exit 3; }
fi
log "Docker engine $(docker version --format '{{.Server.Version}}') answers"

# 3. The virtual environment. Chainer 7.8.1 is an sdist that needs pkg_resources to build:
#    setuptools < 70, without build isolation.
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# The `azure` and `azure-v2` extras (azureml-core, azureml-train-core, azure-ai-ml) too, so that
# the tests of both Azure translations run here; amlocal itself never needs them for local runs.
.venv/bin/pip install -q -e ".[test,azure,azure-v2]"
if ! .venv/bin/pip show chainer >/dev/null 2>&1; then
    .venv/bin/pip install -q "setuptools<70" wheel
    .venv/bin/pip install -q --no-build-isolation chainer==7.8.1
fi
log "amlocal $(.venv/bin/amlocal --version | awk '{print $NF}') installed in .venv"

# 4. A base image for the recipes: the public one if it is here or can be pulled, else one made
#    from Debian packages.
if docker image inspect python:3.11-slim-bookworm >/dev/null 2>&1 \
   || docker pull -q python:3.11-slim-bookworm >/dev/null 2>&1; then
    log "base image python:3.11-slim-bookworm is available"
else
    log "no registry reachable: building the base image from Debian packages"
    as_root .venv/bin/amlocal base-image build
fi
