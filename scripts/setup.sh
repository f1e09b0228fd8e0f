#!/usr/bin/env bash
# Set up a development or demo environment from nothing, idempotently:
#   1. the Debian packages the demo and tests read (WordNet, Fashion-MNIST), and with --test the
#      tools the tests run for real (docker.io and mmdebstrap to build and run every image,
#      prometheus for promtool, prometheus-pushgateway for the promotion gate's metric,
#      chromium to render the HTML report), when we can install them
#      (root with apt-get); otherwise the
#      exact command to run;
#   2. .venv in the repository root with mawsflow, its `train` extra (torch) and dependencies,
#      and the test extras with --test.
# Usage: scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."

extras="[train]"
apt_packages=(wordnet-base wordnet-sense-index dataset-fashion-mnist)
# Only the tests use these; without them the image, container and promtool tests skip and say
# why, so a developer without root can still run the rest. CI runs as root: they never skip.
test_tools=()
if [[ "${1:-}" == "--test" ]]; then
  extras="[train,test]"
  test_tools=(docker.io mmdebstrap prometheus prometheus-pushgateway chromium)
fi
missing=()
for pkg in "${apt_packages[@]}" "${test_tools[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine's package lists are empty or stale: update first.
    apt-get update -qq
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    echo "setup: installing Debian packages with sudo: ${missing[*]}"
    sudo apt-get update -qq
    sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: these Debian packages are missing and I cannot install them (not root):" >&2
    echo "    sudo apt-get install -y ${missing[*]}" >&2
    echo "setup: WordNet is needed by the dataset build, Fashion-MNIST by the demo corpus;" >&2
    echo "setup: docker.io and mmdebstrap build and run the images, prometheus has promtool," >&2
    echo "setup: prometheus-pushgateway receives the promotion gate's metric, chromium" >&2
    echo "setup: renders the HTML report." >&2
    for pkg in "${missing[@]}"; do
      [[ " ${test_tools[*]} " == *" $pkg "* ]] || exit 1
    done
    echo "setup: going on without the test tools; their tests will skip" >&2
  fi
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: mawsflow needs Python 3.11 (found $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
# torch 2.14.1 + torchvision 0.29.1 are a matching pair (each torchvision release is built
# for one torch release); pip resolves them from pyproject.toml together with everything else.
echo "setup: installing mawsflow$extras into .venv (first run takes a few minutes: torch is large)"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extras"
echo "setup: done ($(.venv/bin/python -c 'import torch, mawsflow; print("mawsflow", mawsflow.__version__, "torch", torch.__version__)'))"
