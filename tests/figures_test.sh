#!/usr/bin/env bash
# ekvae_eval --figures on a tiny model trained in a second: every PNG exists, decodes, has the
# expected size in pixels and is not a single colour; bad input exits with named problems.
#   bash tests/figures_test.sh path/to/dir/with/ekvae_train+ekvae_eval
# Needs Debian's /usr/bin/python3 with numpy and matplotlib (scripts/setup.sh).
set -u
BIN="$1"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }

if ! /usr/bin/python3 -c "import numpy, matplotlib" 2>/dev/null; then
    echo "FAIL: /usr/bin/python3 lacks numpy/matplotlib: apt-get install python3-numpy python3-matplotlib (or scripts/setup.sh)"
    exit 1
fi

"$BIN/ekvae_train" --restarts 1 --steps 30 --image-size 8 --enc-hidden [32] --dec-hidden [32] --alpha-hidden [16] \
    --train-sequences 20 --test-sequences 10 --eval-every 10 --batch 8 --window 16 --out "$DIR/run" >"$DIR/train.out" 2>&1 \
    || { cat "$DIR/train.out"; echo "FAIL: ekvae_train"; exit 1; }
M="$DIR/run/model.safetensors"

# one model with its log
out="$("$BIN/ekvae_eval" --model "$M" --sequences 10 --log "$DIR/run/train.jsonl" --figures "$DIR/fig" 2>&1)"
status=$?
echo "$out"
[ "$status" -eq 0 ] || fail "ekvae_eval --figures exited with $status"
grep -qF "r2 linear" <<<"$out" || fail "the metrics are not printed with --figures"

# check_png FILE WIDTH HEIGHT
check_png() {
    local msg
    msg="$(/usr/bin/python3 - "$1" "$2" "$3" <<'EOF'
import sys
import numpy as np
import matplotlib.image as mpimg
path, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    img = mpimg.imread(path)
except Exception as e:
    print("does not decode: %s" % e)
    sys.exit(1)
if img.shape[1] != w or img.shape[0] != h:
    print("is %dx%d pixels, expected %dx%d" % (img.shape[1], img.shape[0], w, h))
    sys.exit(1)
colours = np.unique(img.reshape(-1, img.shape[-1]), axis=0)
if len(colours) < 16:
    print("has only %d colours" % len(colours))
    sys.exit(1)
print("%dx%d, %d colours" % (w, h, len(colours)))
EOF
)" || { fail "$1 $msg"; return; }
    echo "ok: $(basename "$1") $msg"
}
# sizes: 100 dpi; latent 10x4.2 in per model, forecast 10x4 in, training 12x6.5 in, predictions
# 10 in wide and (1.3 + 8.3 * mosaic aspect) in high, rounded to 0.1 in (4.9 in for 8x8 frames, one model)
check_png "$DIR/fig/latent.png" 1000 420
check_png "$DIR/fig/predictions.png" 1000 490
check_png "$DIR/fig/forecast_error.png" 1000 400
check_png "$DIR/fig/training.png" 1200 650
[ -s "$DIR/fig/figures.json" ] || fail "no figures.json"

# two models (the same file twice, under two names) without a log: one latent row each, no training.png
cp "$M" "$DIR/a.safetensors"
cp "$M" "$DIR/b.safetensors"
"$BIN/ekvae_eval" --model "$DIR/a.safetensors,$DIR/b.safetensors" --sequences 10 --figures "$DIR/fig2" >/dev/null 2>&1 \
    || fail "two models: ekvae_eval --figures failed"
check_png "$DIR/fig2/latent.png" 1000 840
[ -e "$DIR/fig2/training.png" ] && fail "training.png written without --log"

# expect STATUS PATTERN -- ARGS...
expect() {
    local want="$1" pattern="$2"
    shift 3
    local out status
    out="$("$BIN/ekvae_eval" "$@" 2>&1)"
    status=$?
    echo "check: ekvae_eval $* -> status $want, message '$pattern'"
    [ "$status" -eq "$want" ] || { fail "status $status (want $want): $out"; return; }
    grep -qF -- "$pattern" <<<"$out" || fail "message lacks '$pattern': $out"
}
expect 2 "add --figures DIR" -- --model "$M,$M" --sequences 10
expect 2 "add --figures DIR" -- --model "$M" --log "$DIR/run/train.jsonl" --sequences 10
expect 2 "no such file" -- --model "$M" --log "$DIR/none.jsonl" --figures "$DIR/f3" --sequences 10
expect 0 "usage" -- --help
# plotting that cannot run exits 1 and says how to fix it
out="$(EKVAE_PYTHON=/nonexistent/python3 "$BIN/ekvae_eval" --model "$M" --sequences 10 --figures "$DIR/f4" 2>&1)"
[ $? -eq 1 ] || fail "missing python: status not 1"
grep -qF "apt-get install python3-matplotlib" <<<"$out" || fail "missing python: no install hint: $out"
out="$(EKVAE_PYTHON=/bin/false "$BIN/ekvae_eval" --model "$M" --sequences 10 --figures "$DIR/f5" 2>&1)"
[ $? -eq 1 ] || fail "failing plot: status not 1"
grep -qF "failed" <<<"$out" || fail "failing plot: no message: $out"

if [ "$FAILS" -ne 0 ]; then
    echo "$FAILS check(s) failed"
    exit 1
fi
echo "all figure checks passed"
