#!/usr/bin/env bash
# Fails with an instruction when Java >= 11 (needed by PyFlink) is missing.
set -euo pipefail
if ! command -v java >/dev/null 2>&1; then
    echo "Java 11 or newer is required by PyFlink and was not found on PATH." >&2
    echo "Install it: Debian/Ubuntu 'apt-get install -y openjdk-17-jre-headless'," >&2
    echo "macOS 'brew install openjdk@17', or set JAVA_HOME and add \$JAVA_HOME/bin to PATH." >&2
    exit 1
fi
ver=$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
major=${ver%%.*}
[ "$major" = "1" ] && major=$(echo "$ver" | cut -d. -f2)
if [ "${major:-0}" -lt 11 ]; then
    echo "Java $ver found, but PyFlink needs Java 11 or newer (17 recommended)." >&2
    echo "Install openjdk-17-jre-headless and put it first on PATH (or set JAVA_HOME)." >&2
    exit 1
fi
[ "${1:-}" = "--version" ] && echo "$ver"
exit 0
