#!/bin/sh
# monoquant calibrate: usage, success, warnings, --strict, bad values.
. tests/cli/lib.sh

# st_write FILE JSON_TENSORS DATA_HEX: a safetensors file with the given header entries
# (without braces) and data bytes written as octal escapes.
st_write() {
    json="{\"__metadata__\":{\"format\":\"pt\"},$2}"
    while [ $(( ${#json} % 8 )) -ne 0 ]; do json="$json "; done
    n=${#json}
    { printf "$(printf '\\%03o\\%03o\\%03o' $((n & 255)) $(((n >> 8) & 255)) $(((n >> 16) & 255)))"
      printf '\000\000\000\000\000'
      printf '%s' "$json"
      printf "$3"; } > "$1"
}
ONE='\000\000\200\077'; TWO='\000\000\000\100'; MONE='\000\000\200\277'; NAN='\000\000\300\177'
HALF='\000\000\000\077'
# model: Linear l [2 out, 2 in] and Linear m [1, 2]
st_write "$T/model.safetensors" \
  '"l.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"m.weight":{"dtype":"F32","shape":[1,2],"data_offsets":[16,24]}' \
  "$ONE$TWO$MONE$ONE$HALF$ONE"
# activations of l: [2, 2] = [[-1, 2], [1, 0.5]]
st_write "$T/a0.safetensors" '"l":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}' "$MONE$TWO$ONE$HALF"
st_write "$T/a1.safetensors" '"l":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}' "$ONE$ONE"
# an unknown layer, a wrong shape, a NaN
st_write "$T/unknown.safetensors" '"zz":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}' "$ONE$ONE"
st_write "$T/shape.safetensors" '"m":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]}' "$ONE$ONE"
st_write "$T/nan.safetensors" '"l":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}' "$ONE$NAN"
mkdir -p "$T/dir" && cp "$T/a0.safetensors" "$T/dir/b0.safetensors" && cp "$T/a1.safetensors" "$T/dir/b1.safetensors"

expect_exit 0 help -- "$MQ" calibrate --help
expect_out help_text "--observer KIND"
expect_exit 2 no_args -- "$MQ" calibrate
expect_exit 2 bad_observer -- "$MQ" calibrate --model "$T/model.safetensors" --activations "$T/a0.safetensors" -o "$T/o.safetensors" --observer median
expect_out bad_observer_named "--observer: invalid value 'median' \(valid: minmax, moving_average, histogram, entropy, percentile, mse\)"
expect_exit 2 bad_dtype -- "$MQ" calibrate --model "$T/model.safetensors" --activations "$T/a0.safetensors" -o "$T/o.safetensors" --dtype int3
expect_exit 2 bad_percentile -- "$MQ" calibrate --model "$T/model.safetensors" --activations "$T/a0.safetensors" -o "$T/o.safetensors" --observer percentile --percentile 40
expect_exit 5 missing_model -- "$MQ" calibrate --model "$T/nope.safetensors" --activations "$T/a0.safetensors" -o "$T/o.safetensors"
expect_exit 5 missing_activations -- "$MQ" calibrate --model "$T/model.safetensors" --activations "$T/nope" -o "$T/o.safetensors"

# success with a warning for layer m (no data); two files, given one by one
expect_exit 0 calibrate_minmax -- "$MQ" calibrate --model "$T/model.safetensors" --activations "$T/a0.safetensors" "$T/a1.safetensors" -o "$T/s.safetensors" --json
expect_out warns_missing_layer "layer 'm'.*no activations"
# minmax over [-1, 2]: uint8 asymmetric scale 3/255 -> 0.0117647..., zero point 85
expect_out minmax_scale '"layer": "l".*"rows": 3, "input_scale": 0.0117647[0-9]*, "input_zero_point": 85'
[ -s "$T/s.safetensors" ] && ok stats_written || notok stats_written "no output file"
# a folder of files gives the same numbers
expect_exit 0 calibrate_folder -- "$MQ" calibrate --model "$T/model.safetensors" --activations "$T/dir" -o "$T/s2.safetensors" --json
expect_out folder_scale '"rows": 3, "input_scale": 0.0117647[0-9]*, "input_zero_point": 85'
for k in moving_average histogram entropy percentile mse; do
    expect_exit 0 "observer_$k" -- "$MQ" calibrate --model "$T/model.safetensors" --activations "$T/dir" -o "$T/s_$k.safetensors" --observer $k --scheme sym --dtype int8 --per-channel
done
# --strict: the missing layer m becomes an error, nothing is written
rm -f "$T/strict.safetensors"
expect_exit 3 strict_missing_layer -- "$MQ" calibrate --model "$T/model.safetensors" --activations "$T/a0.safetensors" -o "$T/strict.safetensors" --strict
[ ! -e "$T/strict.safetensors" ] && ok strict_writes_nothing || notok strict_writes_nothing "file written"
expect_exit 0 unknown_layer_warns -- "$MQ" calibrate --model "$T/model.safetensors" --activations "$T/a0.safetensors" "$T/unknown.safetensors" -o "$T/u.safetensors"
expect_out unknown_layer_named "'zz' match no Linear or Conv layer"
expect_exit 0 shape_warns -- "$MQ" calibrate --model "$T/model.safetensors" --activations "$T/a0.safetensors" "$T/shape.safetensors" -o "$T/u.safetensors" -f
expect_out shape_named "wrong shape: 'm' expects \[\.\.\., 2\]"
expect_exit 3 no_layer_fed -- "$MQ" calibrate --model "$T/model.safetensors" --activations "$T/unknown.safetensors" -o "$T/u.safetensors" -f
expect_out no_layer_fed_named "no layer of .* received activations"
expect_exit 3 nan_is_an_error -- "$MQ" calibrate --model "$T/model.safetensors" --activations "$T/nan.safetensors" -o "$T/u.safetensors" -f
expect_out nan_named "nan at \[0, 1\]"
finish
