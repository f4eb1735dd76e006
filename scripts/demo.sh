#!/usr/bin/env bash
# The whole pipeline on the project's own sample lyrics, on a CPU, in a few minutes:
# download GPT-2 124M, fine-tune a few dozen short steps, rap from an <<Artist prompt.
# Set RAPGEN_MODEL_URL to use a mirror instead of OpenAI's host.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-124M}
STEPS=${STEPS:-30}
RUN=${RUN:-demo}

rapgen download "$MODEL"
rapgen dataset-info data/sample_lyrics.txt
rapgen train --dataset data/sample_lyrics.txt --model "$MODEL" --run_name "$RUN" \
    --steps "$STEPS" --sequence_length 128 --batch_size 1 --learning_rate 1e-4 \
    --save_every 10 --sample_every 0 --val_every 10 --print_every 10
rapgen sample --model "checkpoints/$RUN" --artist "Lil Tofu" --length 96 --seed 1
