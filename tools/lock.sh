#!/usr/bin/env bash
# Refresh requirements.lock: resolve pyproject's dependencies (extras cpu,train,test,bench) in a
# throwaway venv and pin every package except torch and onnxruntime, which the Makefile
# pins itself (TORCH, ORT) so GPU users can swap in their own CUDA builds.
#   make lock      # then commit requirements.lock
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
ORT=${ORT:-onnxruntime==1.32.0}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q "$TORCH" "$ORT" 2> >(grep -v "^WARNING: Location" >&2)
"$tmp/venv/bin/pip" install -q -e ".[cpu,train,test,bench]" 2> >(grep -v "^WARNING: Location" >&2)
{
  echo "# Pinned by tools/lock.sh ('make lock') on $(date -u +%Y-%m-%d) with $("$PYTHON" --version)."
  echo "# Installed by 'make install' after $TORCH and $ORT (pinned in the Makefile)."
  "$tmp/venv/bin/pip" freeze --exclude-editable | grep -v -i -E '^(torch|onnxruntime|onnxruntime-gpu)==' | LC_ALL=C sort -f
} > requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)" >&2
