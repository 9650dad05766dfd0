#!/usr/bin/env bash
# The one-call GPU check (benchmarks/gpu_check.py says what it runs and writes):
#   bash benchmarks/gpu_check.sh OUTDIR --data-dir DIR [--epochs 10]
# On a machine with an NVIDIA GPU, CuPy and PyTorch and no package registry: installs tinyvae
# from this checkout without its dependencies (and, where TINYVAE_WHEELS names a folder, the
# wheels carried in it), then runs the check.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${TINYVAE_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps "$TINYVAE_WHEELS"/*.whl
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . \
  || echo "gpu_check.sh: tinyvae not installed; running from the checkout"
exec python3 -m benchmarks.gpu_check "$@"
