#!/bin/sh
# Writes the seed inputs of fuzz_qmodel into tests/corpus/qmodel/: small checkpoints that
# the CLI quantizes in each stored layout, with the config.json of folder outputs prefixed as
# the target expects (byte 0 = 1, two bytes of length, the JSON, then the checkpoint).
# Usage: sh tests/fuzz/qmodel_seeds.sh [path/to/monoquant]   (after `make`)
set -eu
cli=${1:-build/monoquant}
out=tests/corpus/qmodel
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

# a model folder: config.json and two Linear weights [32, 64] and a bias, f32, values from a
# fixed sequence
mkdir "$tmp/in"
echo '{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}' >"$tmp/in/config.json"
python3 - "$tmp/in/model.safetensors" <<'EOF'
import json, struct, sys
vals = [((i * 2654435761) % 2001 - 1000) / 1000.0 for i in range(32 * 64)]
blob = struct.pack("<%df" % len(vals), *vals)
bias = struct.pack("<32f", *[v / 10 for v in vals[:32]])
hdr = {"model.layers.0.mlp.up_proj.weight": {"dtype": "F32", "shape": [32, 64], "data_offsets": [0, len(blob)]},
       "model.layers.0.mlp.down_proj.weight": {"dtype": "F32", "shape": [32, 64], "data_offsets": [len(blob), 2 * len(blob)]},
       "model.layers.0.mlp.up_proj.bias": {"dtype": "F32", "shape": [32], "data_offsets": [2 * len(blob), 2 * len(blob) + len(bias)]}}
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
blob2 = struct.pack("<%df" % len(vals), *vals[::-1])
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + blob + blob2 + bias)
EOF

seed() { # name, then quantize options; a folder output carries its config.json
    name=$1
    shift
    rm -rf "$tmp/o"
    "$cli" quantize "$tmp/in" --output-dir "$tmp/o" --no-default-skip \
        --no-error-stats "$@" >/dev/null
    python3 - "$tmp/o" "$out/$name" <<'EOF'
import glob, os, struct, sys
d, dst = sys.argv[1], sys.argv[2]
cfg = open(os.path.join(d, "config.json"), "rb").read()
st = sorted(glob.glob(os.path.join(d, "*.safetensors")))[0]
open(dst, "wb").write(b"\x01" + struct.pack("<H", len(cfg)) + cfg + open(st, "rb").read())
EOF
}
seed ct_int4_g16_sym --bits 4 --group-size 16
seed ct_uint4_g16_asym --type uint4 --scheme asym --group-size 16
seed ct_int8_channel --bits 8 --weights-only
seed ct_int8_dynamic --bits 8
seed ct_int4_bf16_scales --bits 4 --group-size 32 --scale-dtype bf16
seed gptq_v1_g16 --bits 4 --group-size 16 --format gptq
seed gptq_v2_asym_g32 --bits 4 --group-size 32 --scheme asym --format gptq
seed native_int4_g16 --bits 4 --group-size 16 --format native
seed native_uint8_tensor --type uint8 --scheme asym --granularity tensor --format native
seed fp16_cast --bits 16
