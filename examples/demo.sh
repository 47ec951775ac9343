#!/bin/sh
# The demo: the main job on the bundled demo model. Usage: demo.sh MONOQUANT MODEL
set -e
mq=$1; model=$2
dir=$(dirname "$model")
echo "== monoquant info $model"
"$mq" info "$model"
echo
echo "== monoquant quantize --bits 4 (INT4, groups of 128 along the input dimension)"
"$mq" --no-progress -f quantize "$model" --bits 4 -o "$dir/demo.int4-g128.safetensors"
echo
echo "== monoquant quantize --bits 8 (INT8 per output channel)"
"$mq" --no-progress -f quantize "$model" --bits 8 -o "$dir/demo.int8.safetensors"
echo
echo "== monoquant validate demo.int4-g128.safetensors --reference --min-sqnr 8 (integrity + error figures)"
"$mq" validate "$dir/demo.int4-g128.safetensors" --reference "$model" --min-sqnr 8
echo
echo "== monoquant validate demo.int8.safetensors --reference --run --mode dynamic (run each layer through the kernels)"
"$mq" --no-progress validate "$dir/demo.int8.safetensors" --reference "$model" --run --mode dynamic \
    --min-sqnr 20 > "$dir/demo.validate-run.txt"
head -n 7 "$dir/demo.validate-run.txt"; echo "   ..."; tail -n 1 "$dir/demo.validate-run.txt"
echo
echo "== monoquant info demo.int4-g128.safetensors"
"$mq" info "$dir/demo.int4-g128.safetensors" | head -n 16
echo "   ..."
echo
echo "== monoquant dequantize + compare (plain BF16 checkpoint with the original names)"
"$mq" -f dequantize "$dir/demo.int4-g128.safetensors" -o "$dir/demo.int4-g128.dequantized.safetensors"
"$mq" compare "$model" "$dir/demo.int4-g128.safetensors" | tail -n 1
