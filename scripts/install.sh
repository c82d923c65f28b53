#!/usr/bin/env bash
# Create a virtual environment and install pixio into it: install.sh VENV [EXTRAS]
# Used by `make demo` / `make test` and by CI, so a fresh machine needs nothing else.
set -euo pipefail
venv=${1:-.venv}
extras=${2:-}
# CPU/GPU wheels of torch that install on our machines without a large download; override if you need another.
torch_spec=${PIXIO_TORCH_SPEC:-"torch==2.14.1"}

# Open3D (point clouds) links against libusb-1.0, which slim Debian/Ubuntu images lack.
# shellcheck source=scripts/libusb.sh
source "$(dirname "$0")/libusb.sh"
if ! have_libusb; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing libusb-1.0 for Open3D" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
  elif command -v apt-get >/dev/null && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    echo "installing libusb-1.0 for Open3D" >&2
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
  else
    echo "warning: Open3D needs the system library libusb-1.0 (e.g. apt-get install libusb-1.0-0);" \
         "point-cloud outputs will fail until it is installed" >&2
  fi
fi

say() { echo "install: $*" >&2; }
if [ ! -x "$venv/bin/python" ]; then
  say "creating the virtual environment $venv"
  python3 -m venv "$venv"
fi
pip_install() {  # quiet unless pip fails; this machine's pip prints harmless index warnings
  local log
  log=$(mktemp)
  if ! "$venv/bin/python" -m pip install -q "$@" >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}
say "upgrading pip"
pip_install --upgrade pip
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  say "installing $torch_spec (the largest step: a few minutes)"
  # shellcheck disable=SC2086
  pip_install $torch_spec
fi
target="."
[ -n "$extras" ] && target=".[$extras]"
say "installing pixio${extras:+ with its $extras extras} and what it needs (OpenCV, Open3D, pycolmap, ...)"
pip_install -e "$target"
"$venv/bin/python" -c "import torch, cv2, typer, pycolmap, pixio_cli" \
  || { echo "error: the installation in $venv is incomplete (see pip's messages above)" >&2; exit 1; }
say "done: $venv/bin/pixio"
