#!/usr/bin/env bash
# Rebuild the two models that ship inside midilm (src/midilm/bundled/), with midilm's own
# pipeline: prepare → train → evaluate → package (fp16 weights, model card, report).
#
#   bash scripts/build_bundled_models.sh [BUILD_DIR]        # default: build/bundled
#   STAGE=mmm bash scripts/build_bundled_models.sh          # only the default MMM model
#   STAGE=remi bash scripts/build_bundled_models.sh         # only the REMI model
#
# Every step is resumable: re-running the script continues an interrupted preparation or
# training (midilm prepare / midilm train --resume) and skips finished steps. About two
# hours per model on 2 CPU cores. Logs: BUILD_DIR/*.log.
set -euo pipefail
BUILD=${1:-build/bundled}
STAGE=${STAGE:-all}
mkdir -p "$BUILD"

train() {  # train DATASET MODEL_DIR ARGS...: start, or resume when a checkpoint exists
    local data=$1 out=$2; shift 2
    if [ -f "$out/model.safetensors" ] && [ ! -d "$out/checkpoints" ]; then return; fi
    local resume=()
    if [ -d "$out/checkpoints" ]; then resume=(--resume); fi
    midilm train "$data" -o "$out" "${resume[@]}" "$@"
}

if [ "$STAGE" = all ] || [ "$STAGE" = mmm ]; then
    # The default model: Bach chorales as MMM text, 4-bar windows, 12 transpositions, a
    # quarter of the windows as bar-infilling examples, voices re-orchestrated (choir,
    # strings, organ, brass, woodwinds, piano) so users can choose their instruments.
    midilm prepare music21:bach -o "$BUILD/data-mmm" --tokenizer mmm --meter-tokens \
        --bars 4 --hop 2 --transpose -5:6 --infill-share 0.25 \
        --instrument-augmentation ensembles --seed 444 --no-progress
    train "$BUILD/data-mmm" "$BUILD/mmm" --preset small --seq-len 1024 \
        --max-steps 700 --batch-size 32 --lr 1e-3 --set warmup_ratio=0.05 \
        --set scheduler=cosine --set log_every=10 --eval-every 100 --save-every 50 \
        --keep-checkpoints 2 -q \
        2>&1 | tee -a "$BUILD/train-mmm.log"
    # Package it, then judge it as users get it (its generation defaults: density steering,
    # the voice-leading guard) on the chorales' test split in their own keys, and package
    # it again with that report in its card.
    package_default() {
        python scripts/package_bundled_model.py "$BUILD/mmm" default \
            --command "bash scripts/build_bundled_models.sh" \
            --instruments violin,violin,viola,cello --voice-leading "$@"
    }
    package_default
    midilm prepare music21:bach -o "$BUILD/data-mmm-eval" --tokenizer mmm --meter-tokens \
        --bars 4 --hop 2 --transpose 0 --infill-share 0.25 --seed 444 --no-progress
    midilm evaluate bundled:default "$BUILD/data-mmm-eval" --samples 100 --bars 4 \
        -o "$BUILD/mmm-report"
    package_default --report "$BUILD/mmm-report"
fi

if [ "$STAGE" = all ] || [ "$STAGE" = remi ]; then
    # The REMI + BPE model: the chorales and music21's string quartets as one piano
    # stream; BPE sized to this small corpus.
    midilm prepare music21:bach music21:haydn music21:mozart music21:beethoven \
        -o "$BUILD/data-remi" --tokenizer remi --vocab-size 1000 --transpose -3:3 \
        --seed 444 --no-progress
    train "$BUILD/data-remi" "$BUILD/remi" --preset small --seq-len 512 \
        --max-steps 450 --batch-size 32 --lr 1e-3 --set warmup_ratio=0.05 \
        --set scheduler=cosine --set log_every=10 --eval-every 100 --save-every 50 \
        --keep-checkpoints 2 -q \
        2>&1 | tee -a "$BUILD/train-remi.log"
    midilm evaluate "$BUILD/remi" "$BUILD/data-remi" --samples 20 -o "$BUILD/remi-report"
    python scripts/package_bundled_model.py "$BUILD/remi" remi \
        --report "$BUILD/remi-report" --command "STAGE=remi bash scripts/build_bundled_models.sh"
fi
