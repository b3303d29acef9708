#!/usr/bin/env bash
# Install Debian packages a test needs when they are missing (idempotent):
#   bash scripts/ensure_debs.sh chromium
# Uses apt-get as root (or through sudo); runs `apt-get update` first only when the package
# is not known to apt yet. Never downloads anything else (no browser bundles).
set -euo pipefail
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && { say "Debian packages present: $*"; exit 0; }

if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "[setup] missing Debian packages: ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
say "installing Debian packages: ${missing[*]} (once; the browser test needs them)"
if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
