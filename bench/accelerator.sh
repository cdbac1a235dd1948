#!/usr/bin/env bash
# One prepared run of every accelerator measurement (issue 7): base preset, bf16 compute (f32 params),
# fused attention, JAX and PyTorch (bf16 autocast) side by side, MFU against the vendor bf16 peak; then
# the same train step once more under the profiler, for where its time goes.
#
#   OUT=/tmp/out bash bench/accelerator.sh            # on the accelerator machine, from the repo root
#
# Packages missing from the accelerator's image (ml_collections) travel as wheels in .whl/ (git-ignored;
# `pip download ml-collections==1.1.0 --no-deps -d .whl` where there is network, or copy the wheel from
# a local package mirror) and are installed here without network. Environment: TRAIN_BATCH (32), REPS
# (10), PROFILE_TIMEOUT (seconds, 300; 0 skips the profile), SCALE_BATCHES (train batches timed after the
# profile, for MFU against batch size: "64"; "" skips them), SCALE_TIMEOUT (seconds each, 300),
# RERANK_PAIRS (retrieval re-rank pairs timed last, 32 texts per image, against transformers' per-pair
# ITM: a multiple of 32, 256 when unset or empty; 0 skips it), RERANK_TIMEOUT (seconds, 240), PRESET /
# DEVICE (base / gpu; `PRESET=tiny DEVICE=cpu TRAIN_BATCH=2 SCALE_BATCHES=4` rehearses the whole script on
# CPU). Order: what the targets need first, so a run cut short keeps them.
set -euo pipefail
OUT=${OUT:-/tmp/bench_out}
PRESET=${PRESET:-base}
DEVICE=${DEVICE:-gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
# A compilation cache of this run only (never one from the environment): the bench compiles the train
# step on an empty cache, so its compile time is measured, and the profile below loads it instead of
# compiling it again.
JAX_COMPILATION_CACHE_DIR=$(mktemp -d /tmp/bt_xla_cache.XXXXXX)
trap 'rm -rf "$JAX_COMPILATION_CACHE_DIR"' EXIT
export JAX_COMPILATION_CACHE_DIR
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import jax, torch, transformers, flax; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__, 'transformers', transformers.__version__, 'flax', flax.__version__)"
# No cost analysis: on the GPU XLA's count sees neither cuDNN's attention nor most GEMMs of the gradient
# (the CPU runs check the formula), and compiling the gradient for it costs minutes of device time.
cost_analysis=$([ "$DEVICE" = cpu ] && echo "" || echo "--skip_cost_analysis")
python3 -m bench.vs_pytorch --preset "$PRESET" --device "$DEVICE" --train_batch "${TRAIN_BATCH:-32}" \
  --reps "${REPS:-10}" --train_reps "${REPS:-10}" $cost_analysis --json "$OUT/${PRESET}_${DEVICE}.json" 2>&1 \
  | tee "$OUT/${PRESET}_${DEVICE}.log"
if [ "${PROFILE_TIMEOUT:-300}" -gt 0 ]; then
  # The longest ops of one step, labelled with the part of the model they come from; the raw trace and
  # the optimised HLO stay in $OUT/profile. A time-out leaves the bench's results above intact.
  timeout "${PROFILE_TIMEOUT:-300}" python3 -m bench.profile_step --preset "$PRESET" --batch "${TRAIN_BATCH:-32}" \
    --reps 3 --trace "$OUT/profile" --top 40 2>&1 | tee "$OUT/profile.log" \
    || echo "bench.profile_step did not finish (exit ${PIPESTATUS[0]}); the bench's results are in $OUT" | tee -a "$OUT/profile.log"
fi
# The trainer's step alone at larger batches (each compiles anew): step times, MFU and device memory.
for batch in ${SCALE_BATCHES-64}; do
  timeout "${SCALE_TIMEOUT:-300}" python3 -m bench.profile_step --preset "$PRESET" --batch "$batch" --reps 5 \
    2>&1 | tee -a "$OUT/scale.log" \
    || echo "bench.profile_step at batch $batch did not finish (exit ${PIPESTATUS[0]})" | tee -a "$OUT/scale.log"
done
# Retrieval evaluation's re-rank (the vision tower once per image for 32 texts) against transformers' ITM
# on every pair: last, since no target depends on it.
if [ "${RERANK_PAIRS:-256}" -gt 0 ]; then
  timeout "${RERANK_TIMEOUT:-240}" python3 -m bench.vs_pytorch --preset "$PRESET" --device "$DEVICE" --forward_batches "" \
    --train_batch 0 --rerank_pairs "${RERANK_PAIRS:-256}" --rerank_texts_per_image 32 --reps "${REPS:-10}" \
    $cost_analysis --json "$OUT/rerank_${PRESET}_${DEVICE}.json" 2>&1 | tee "$OUT/rerank.log" \
    || echo "the re-rank bench did not finish (exit ${PIPESTATUS[0]})" | tee -a "$OUT/rerank.log"
fi
