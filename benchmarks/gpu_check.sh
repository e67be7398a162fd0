#!/usr/bin/env bash
# Everything this project checks on a GPU, as one script of under 10 minutes (one H100 or H200):
#   1. the CUDA tests (bf16, fp16 + GradScaler, fp32; torch.compile; the device-side augmentation);
#   2. pre-training throughput at the paper configuration (ViT-B/16 at 224 px, 3 views per study,
#      BERT-base-sized text encoder, 6 x 512 report transformer), 32 studies per step (the paper's
#      batch): fp32 (TF32) eager vs bf16 vs bf16 + torch.compile, model step and end to end (the
#      loader reading uint8 films from the memory-mapped cache, augmentation on the GPU);
#   3. the same with 128 studies per step, bf16 + compile, for the throughput ceiling.
# Results go to $OUT (default benchmarks/out): logs and JSON. Usage:
#   bash benchmarks/make_devsite.sh   # here, once: the text tokenizer files for a bare GPU machine (carry .devsite)
#   PYTHONPATH=$PWD/.devsite bash benchmarks/gpu_check.sh   # there
# Python: the one on PATH, or $PYTHON; refers_lite is imported from this checkout.
set -u -o pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
stamp() { echo "== $(( $(date +%s) - start )) s: $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
stamp "CUDA tests"
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_gpu_augment.py 2>&1 | tail -15 | tee "$OUT/cuda_tests.log"
stamp "throughput, paper size, 32 studies per step"
timeout 240 $PY benchmarks/pretrain_throughput.py --device cuda --sizes paper --studies 32 --steps 10 --warmup 3 \
    --e2e-steps 30 --workers 10 --json "$OUT/throughput_b32.json" 2>&1 | grep -v "Loading weights" | tee "$OUT/throughput_b32.log"
stamp "throughput, paper size, 128 studies per step"
timeout 200 $PY benchmarks/pretrain_throughput.py --device cuda --sizes paper --studies 128 --variants bf16,bf16+compile \
    --steps 5 --warmup 3 --e2e-steps 12 --workers 12 --json "$OUT/throughput_b128.json" 2>&1 | grep -v "Loading weights" \
    | tee "$OUT/throughput_b128.log"
stamp "done"
