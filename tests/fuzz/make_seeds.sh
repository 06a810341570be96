#!/usr/bin/env bash
# Writes the seed inputs of the fuzz corpus: a tiny model, its checkpoint and a tiny dataset
# made by the real programs (a few KB each, so the fuzzer mutates them quickly).
#   tests/fuzz/make_seeds.sh BUILD_NATIVE_DIR CORPUS_DIR
set -euo pipefail
bin=$1
corpus=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tiny=(--image-size 4 --enc-hidden "[2]" --dec-hidden "[2]" --alpha-hidden "[2]"
      --train-sequences 4 --test-sequences 2 --sequence-steps 4 --batch 2 --window 2 --eval-every 0 --threads 1)
"$bin/ekvae_train" "${tiny[@]}" --n-a 1 --n-z 1 --K 1 --steps 3 --out "$tmp/a" >/dev/null 2>&1
"$bin/ekvae_train" "${tiny[@]}" --n-z 2 --n-a 2 --K 2 --objective elbo --steps 2 --out "$tmp/b" >/dev/null 2>&1
"$bin/ekvae_data" --out "$tmp/d1.safetensors" --sequences 1 --steps 2 --image-size 4 --seed 1 >/dev/null
"$bin/ekvae_data" --out "$tmp/d2.safetensors" --sequences 2 --steps 3 --image-size 4 --seed 2 >/dev/null
mkdir -p "$corpus"/{safetensors,dataset,model,checkpoint}
cp "$tmp/a/model.safetensors" "$corpus/model/seed-model-a"
cp "$tmp/b/model.safetensors" "$corpus/model/seed-model-b"
cp "$tmp/a/checkpoint.safetensors" "$corpus/checkpoint/seed-checkpoint-a"
cp "$tmp/b/checkpoint.safetensors" "$corpus/checkpoint/seed-checkpoint-b"
cp "$tmp/d1.safetensors" "$corpus/dataset/seed-data-1"
cp "$tmp/d2.safetensors" "$corpus/dataset/seed-data-2"
cp "$tmp/d1.safetensors" "$corpus/safetensors/seed-data-1"
cp "$tmp/a/model.safetensors" "$corpus/safetensors/seed-model-a"
# hand-made: an empty header, a header with metadata only, a zero-element tensor
printf '\x02\x00\x00\x00\x00\x00\x00\x00{}' > "$corpus/safetensors/seed-empty"
hdr='{"__metadata__":{"k":"v"},"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"x":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}'
python3 -c 'import sys,struct; h=sys.argv[1].encode(); sys.stdout.buffer.write(struct.pack("<Q",len(h))+h+bytes(8))' "$hdr" > "$corpus/safetensors/seed-small"
echo "seeds written to $corpus"
