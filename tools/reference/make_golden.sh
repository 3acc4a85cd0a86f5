#!/usr/bin/env bash
# Regenerates the reference golden files under tests/golden/ (models, adapters, logits,
# gradients, AdamW runs, the bf16 budget). Needs Python 3 with torch and numpy; CI never
# runs this, it only reads the committed results.
#
#   tools/reference/make_golden.sh            # models from build/loratune (init-model)
#   LORATUNE=path/to/loratune tools/reference/make_golden.sh
#   REF_MODELS=python tools/reference/make_golden.sh   # models from the Python writer
#
# Run from anywhere; paths in the golden files are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PYTHON:-/usr/bin/python3}
LT=${LORATUNE:-build/loratune}
REF_MODELS=${REF_MODELS:-loratune}
G=tests/golden
M=$G/models
A=$G/adapters
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

quote() {  # print the arguments as a shell command line
  local out=() a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./,=:+-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}
run() {  # echo, record, run
  local line
  line=$(quote "$@")
  line=${line/#"$PY "/python3 }
  echo "+ $line"
  echo "$line" >>"$LOG"
  "$@"
}
ref() { run "$PY" tools/reference/qwen2_ref.py "$@"; }

have_lt() { "$LT" "$@" --help >/dev/null 2>&1; }
py_model() {  # the Python writer takes the same flags except --preset (its defaults are tiny's)
  local a=() skip=0 x
  for x in "$@"; do
    if [[ $skip == 1 ]]; then skip=0; continue; fi
    if [[ $x == --preset ]]; then skip=1; continue; fi
    a+=("$x")
  done
  ref make-model "${a[@]}"
}
if [[ $REF_MODELS == loratune ]]; then
  if ! have_lt init-model; then
    echo "make_golden: $LT init-model is not available (build it, or set REF_MODELS=python)" >&2
    exit 2
  fi
  mk_model() { run "$LT" init-model --threads 1 --init hf "$@"; }
  if have_lt debug init-adapter; then
    mk_adapter() { run "$LT" debug init-adapter "$@"; }
  else
    echo "make_golden: $LT has no 'debug init-adapter' yet; adapters come from the Python writer" >&2
    mk_adapter() { ref init-adapter "$@"; }
  fi
else
  mk_model() { py_model "$@"; }
  mk_adapter() { ref init-adapter "$@"; }
fi

# only this script's folders are replaced; other golden files are left alone
rm -rf $M/tiny $M/tiny_bf16 $M/odd $M/sharp $A/tiny_qv $A/tiny_all $A/odd_all $A/sharp_all $A/tiny_qv_rslora \
  $M/tiny_llama $M/tiny_llama_bias $A/tiny_llama_all $A/tiny_llama_bias_all $M/tiny_qwen3 $A/tiny_qwen3_all \
  $M/tiny_mistral $A/tiny_mistral_all
mkdir -p "$M" "$A"

# ---- models and adapters
mk_model --preset tiny --seed 7 --out $M/tiny
mk_model --preset tiny --seed 7 --dtype bf16 --out $M/tiny_bf16
mk_model --preset tiny --num-hidden-layers 3 --num-attention-heads 6 --num-key-value-heads 2 \
  --hidden-size 96 --seed 11 --out $M/odd
mk_adapter --model $M/tiny --out $A/tiny_qv --lora-r 4 --lora-alpha 16 --target-modules q_proj,v_proj --b-std 0.02 --seed 1
mk_adapter --model $M/tiny --out $A/tiny_all --lora-r 4 --lora-alpha 16 --target-modules all-linear --b-std 0.02 --seed 2
mk_adapter --model $M/odd --out $A/odd_all --lora-r 4 --lora-alpha 16 --target-modules all-linear --b-std 0.02 --seed 3
# "sharp": larger random weights from the Python writer (embeddings std 0.5, projections
# 1/sqrt(in)) so that attention is far from uniform and layout mistakes (RoPE pairs, GQA
# mapping) move the logits by whole units; untied lm_head; written as 2 shards + index.
ref make-model --seed 5 --untied --shards 2 --out $M/sharp
ref init-adapter --model $M/sharp --out $A/sharp_all --lora-r 4 --lora-alpha 16 --target-modules all-linear --b-std 0.2 --seed 4
mk_adapter --model $M/tiny --out $A/tiny_qv_rslora --lora-r 4 --lora-alpha 16 --use-rslora --target-modules q_proj,v_proj \
  --b-std 0.02 --seed 1
# Llama: no biases, head_dim 24 of its own, untied head, llama3 RoPE scaling over an original
# context of 64 (its three frequency bands all occur); and with attention_bias, mlp_bias and a
# tied head.
mk_model --preset tiny-llama --seed 13 --out $M/tiny_llama
mk_model --preset tiny-llama --seed 17 --attention-bias true --mlp-bias true --tie-word-embeddings true \
  --out $M/tiny_llama_bias
mk_adapter --model $M/tiny_llama --out $A/tiny_llama_all --lora-r 4 --lora-alpha 16 --target-modules all-linear --b-std 0.02 --seed 5
mk_adapter --model $M/tiny_llama_bias --out $A/tiny_llama_bias_all --lora-r 4 --lora-alpha 16 --target-modules all-linear --b-std 0.02 --seed 6
# Qwen3: per-head q/k norms, no biases, head_dim 32 with hidden 64 and 4 heads.
mk_model --preset tiny-qwen3 --seed 19 --out $M/tiny_qwen3
mk_adapter --model $M/tiny_qwen3 --out $A/tiny_qwen3_all --lora-r 4 --lora-alpha 16 --target-modules all-linear --b-std 0.02 --seed 7
# Mistral: a sliding window of 20 positions, which the 96-token sequence crosses.
mk_model --preset tiny-mistral --seed 23 --out $M/tiny_mistral
mk_adapter --model $M/tiny_mistral --out $A/tiny_mistral_all --lora-r 4 --lora-alpha 16 --target-modules all-linear --b-std 0.02 --seed 8

# ---- token ids (fixed; tiny vocab is 512)
ONE="481,186,311,205,419,271,251,510,362,425,223,316,338,76,211,479"
BATCH="151,217,421,59,357;426,477,127,142,334,399,338,353,205,333,437,424,324,219,416,234,209;41,230,19,265,326,431,114,339,236,241,475"
LONG="413,389,204,183,235,254,136,88,257,392,91,501,204,431,221,382,397,217,155,472,183,346,84,89,480,323,412,43,275,7,435,208,371,82,473,202,473,52,366,132,221,164,452,181,180,37,112,23,175,485,429,83,435,88,146,317,5,390,337,139,415,205,56,216,453,263,413,129,362,487,57,134,154,418,127,98,121,147,303,178,181,419,149,212,326,511,239,263,120,370,190,74,294,11,48,345"
TRAIN_IDS="374,139,207,377,505,144,268,396,345;343,476,173,135;339,211,67,100,177,4,154,448,241,358,234,83,200"
# prompt tokens masked (-100), one masked hole in the middle, the short sequence fully labelled
TRAIN_LABELS="-100,-100,-100,-100,505,144,268,396,345;343,476,173,135;-100,-100,-100,100,177,-100,154,448,241,358,234,83,200"

# ---- logits (forward in float64, written as float32)
ref logits --double --model $M/tiny --ids "$ONE" --out $G/logits_tiny_1seq.safetensors
ref logits --double --model $M/tiny --ids "$BATCH" --out $G/logits_tiny_batch.safetensors
ref logits --double --model $M/odd --ids "$ONE" --out $G/logits_odd_1seq.safetensors
ref logits --double --model $M/odd --ids "$BATCH" --out $G/logits_odd_batch.safetensors
ref logits --double --model $M/tiny_bf16 --ids "$BATCH" --out $G/logits_tiny_bf16_batch.safetensors
ref logits --double --model $M/sharp --ids "$BATCH" --out $G/logits_sharp_batch.safetensors
ref logits --double --model $M/tiny --ids "$LONG" --out $G/logits_tiny_long.safetensors
ref logits --double --model $M/sharp --ids "$LONG" --out $G/logits_sharp_long.safetensors
ref logits --double --model $M/tiny --adapter $A/tiny_all --ids "$BATCH" --out $G/logits_tiny_adapter_all_batch.safetensors
ref logits --double --model $M/tiny_llama --ids "$LONG" --out $G/logits_tiny_llama_long.safetensors
ref logits --double --model $M/tiny_llama_bias --adapter $A/tiny_llama_bias_all --ids "$BATCH" --out $G/logits_tiny_llama_bias_batch.safetensors
ref logits --double --model $M/tiny_qwen3 --adapter $A/tiny_qwen3_all --ids "$LONG" --out $G/logits_tiny_qwen3_long.safetensors
ref logits --double --model $M/tiny_mistral --adapter $A/tiny_mistral_all --ids "$LONG;$ONE" --out $G/logits_tiny_mistral_long.safetensors

# ---- loss + LoRA gradients (float64, written as float32)
ref grads --model $M/tiny --adapter $A/tiny_qv --ids "$TRAIN_IDS" --labels "$TRAIN_LABELS" --out $G/grads_tiny_qv.safetensors
ref grads --model $M/tiny --adapter $A/tiny_all --ids "$TRAIN_IDS" --labels "$TRAIN_LABELS" --out $G/grads_tiny_all.safetensors
ref grads --model $M/tiny --adapter $A/tiny_qv_rslora --ids "$TRAIN_IDS" --labels "$TRAIN_LABELS" --out $G/grads_tiny_qv_rslora.safetensors
ref grads --model $M/odd --adapter $A/odd_all --ids "$TRAIN_IDS" --labels "$TRAIN_LABELS" --out $G/grads_odd_all.safetensors
ref grads --model $M/sharp --adapter $A/sharp_all --ids "$TRAIN_IDS" --labels "$TRAIN_LABELS" --out $G/grads_sharp_all.safetensors
ref grads --model $M/tiny --adapter $A/tiny_qv --ids "$TRAIN_IDS" --out $G/grads_tiny_qv_default_labels.safetensors
ref grads --model $M/tiny_llama --adapter $A/tiny_llama_all --ids "$TRAIN_IDS" --labels "$TRAIN_LABELS" --out $G/grads_tiny_llama_all.safetensors
ref grads --model $M/tiny_llama_bias --adapter $A/tiny_llama_bias_all --ids "$TRAIN_IDS" --labels "$TRAIN_LABELS" --out $G/grads_tiny_llama_bias_all.safetensors
ref grads --model $M/tiny_qwen3 --adapter $A/tiny_qwen3_all --ids "$TRAIN_IDS" --labels "$TRAIN_LABELS" --out $G/grads_tiny_qwen3_all.safetensors
ref grads --model $M/tiny_mistral --adapter $A/tiny_mistral_all --ids "$LONG;$TRAIN_IDS" --out $G/grads_tiny_mistral_all.safetensors

# ---- AdamW runs (float64)
ref adamw --model $M/tiny --adapter $A/tiny_qv --ids "$TRAIN_IDS" --labels "$TRAIN_LABELS" --steps 10 --lr 1e-3 \
  --weight-decay 0.01 --max-grad-norm 1.0 --warmup-steps 0 --out $G/adamw_tiny_qv_10steps.safetensors
ref adamw --model $M/tiny --adapter $A/tiny_all --ids "$TRAIN_IDS" --labels "$TRAIN_LABELS" --steps 10 --lr 2e-3 \
  --weight-decay 0.1 --max-grad-norm 0.05 --warmup-steps 3 --out $G/adamw_tiny_all_warmup_clip_10steps.safetensors
ref adamw --model $M/tiny --adapter $A/tiny_qv --ids "$TRAIN_IDS" --labels "$TRAIN_LABELS" --steps 10 --lr 1e-3 \
  --weight-decay 0.01 --max-grad-norm 0.881 --warmup-steps 0 --out $G/adamw_tiny_qv_clip_partial_10steps.safetensors

# ---- bf16 budget: CPU autocast bf16 vs float32 (grads --precision fp32 / bf16-autocast on the
# grads_tiny_qv/tiny_all/odd_all/sharp_all inputs, adamw on adamw_tiny_qv_10steps's) -> JSON
run "$PY" tools/reference/make_bf16_budget.py --out $G/bf16_budget.json

# ---- record the commands in tests/golden/README.md (between the markers)
"$PY" - "$G/README.md" "$LOG" <<'EOF'
import sys
readme, log = sys.argv[1], sys.argv[2]
begin, end = "<!-- BEGIN reference commands -->", "<!-- END reference commands -->"
cmds = [l.rstrip("\n") for l in open(log)]
block = begin + "\n```sh\n" + "\n".join(cmds) + "\n```\n" + end
text = open(readme).read()
if begin in text and end in text:
    text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(readme, "w").write(text)
EOF
du -sh $M/* $A/*
ls -l $G
