#!/usr/bin/env bash
# Command-line behaviour of ekvae_data: exit codes, messages, atomic writes.
#   bash tests/cli_data_test.sh path/to/ekvae_data
set -u
BIN="$1"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
FAILS=0

fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }

# expect STATUS PATTERN -- ARGS...: runs the binary, checks the exit status and that
# stderr+stdout contains PATTERN (grep -F)
expect() {
    local want="$1" pattern="$2"
    shift 3
    local out status
    out="$("$BIN" "$@" 2>&1)"
    status=$?
    echo "check: ekvae_data $* -> status $want, message '$pattern'"
    if [ "$status" -ne "$want" ]; then fail "status $status (want $want): $out"; return; fi
    if ! grep -qF -- "$pattern" <<<"$out"; then fail "message lacks '$pattern': $out"; fi
}

GOOD="$DIR/good.safetensors"
expect 0 "wrote" -- --out "$GOOD" --sequences 4 --steps 6 --image-size 8 --seed 5
[ -s "$GOOD" ] || fail "no output file written"
expect 0 "usage" -- --help

expect 2 "unknown flag --bogus" -- --out "$DIR/x.safetensors" --bogus
expect 2 "missing value for --out" -- --out
expect 2 "missing value for --sequences" -- --out "$DIR/x.safetensors" --sequences
expect 2 "--out FILE.safetensors is required" -- --sequences 3
expect 2 "--sequences must be at least 1" -- --out "$DIR/x.safetensors" --sequences 0
expect 2 "--sequences must be at least 1" -- --out "$DIR/x.safetensors" --sequences -5
expect 2 "'abc' is not an integer" -- --out "$DIR/x.safetensors" --sequences abc
expect 2 "--steps must be at least 1" -- --out "$DIR/x.safetensors" --steps=0
expect 2 "--image-size must be between" -- --out "$DIR/x.safetensors" --image-size 0
expect 2 "--image-size must be between" -- --out "$DIR/x.safetensors" --image-size 100000
expect 2 "is not a non-negative integer" -- --out "$DIR/x.safetensors" --seed -1
expect 2 "4 GiB" -- --out "$DIR/x.safetensors" --sequences 100000000
expect 2 "must be between" -- --out "$DIR/x.safetensors" --sequences 99999999999999
expect 2 "/nonexistent/dir" -- --out /nonexistent/dir/x.safetensors --sequences 2 --steps 2
# an existing directory as the output path: the rename fails, status 2
mkdir "$DIR/adir"
expect 2 "adir" -- --out "$DIR/adir" --sequences 2 --steps 2
[ -d "$DIR/adir" ] || fail "directory replaced"

# a failing run aimed at the good file leaves it byte-identical
cp "$GOOD" "$DIR/copy"
expect 2 "4 GiB" -- --out "$GOOD" --sequences 100000000
expect 2 "unknown flag" -- --out "$GOOD" --nope
cmp -s "$GOOD" "$DIR/copy" || fail "good file changed by a failing run"

# same seed, same bytes; --name=value form works
expect 0 "wrote" -- --out="$DIR/again.safetensors" --sequences=4 --steps=6 --image-size=8 --seed=5
echo "check: same seed gives identical bytes"
cmp -s "$GOOD" "$DIR/again.safetensors" || fail "same seed gave different bytes"

echo "check: no temporary files left behind"
if ls "$DIR" | grep -q '\.tmp\.'; then fail "temporary file left: $(ls "$DIR")"; fi
if ls "$DIR/adir" | grep -q '\.tmp\.'; then fail "temporary file left in adir"; fi

# an independent reader (Python's json + struct, no ekvae code) opens the file
if command -v python3 >/dev/null; then
    echo "check: python reads the header and tensor sizes"
    python3 - "$GOOD" <<'PY' || fail "python could not read the file"
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
assert h["__metadata__"]["format"] == "ekvae-dataset", h["__metadata__"]
assert h["images"]["shape"] == [4, 6, 8, 8] and h["images"]["dtype"] == "F32"
assert h["actions"]["shape"] == [4, 6, 1] and h["states"]["shape"] == [4, 6, 2]
end = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__")
assert 8 + n + end == len(b), (n, end, len(b))
b0, b1 = h["images"]["data_offsets"]
px = struct.unpack("<%df" % ((b1 - b0) // 4), b[8 + n + b0:8 + n + b1])
assert all(0.0 <= v <= 1.0 for v in px) and max(px) > 0.0
PY
fi

if [ "$FAILS" -ne 0 ]; then echo "$FAILS check(s) failed"; exit 1; fi
echo "all ekvae_data checks passed"
