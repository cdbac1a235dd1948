#!/usr/bin/env bash
# One prepared run of every accelerator measurement (issue 7): base preset, bf16 compute (f32 params),
# fused attention, JAX and PyTorch (bf16 autocast) side by side, MFU against the vendor bf16 peak.
#
#   OUT=/tmp/out bash bench/accelerator.sh            # on the accelerator machine, from the repo root
#
# ml_collections is not in the accelerator image: it travels as a wheel in .whl/ (git-ignored), see
# bench/README_SECTION.md. TRAIN_BATCH / REPS override the defaults.
set -euo pipefail
OUT=${OUT:-/tmp/bench_out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import jax, torch, transformers, flax; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__, 'transformers', transformers.__version__, 'flax', flax.__version__)"
python3 -m bench.vs_pytorch --preset base --device gpu --train_batch "${TRAIN_BATCH:-32}" \
  --reps "${REPS:-10}" --train_reps "${REPS:-10}" --json "$OUT/base_gpu.json" 2>&1 | tee "$OUT/base_gpu.log"
