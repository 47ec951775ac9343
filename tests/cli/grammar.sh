#!/bin/sh
# One grammar for every subcommand: global options before or after the command, "unknown
# option" vs "needs a value", enumerated values listed, one dtype vocabulary, --help.
. tests/cli/lib.sh

CNN=$FIXTURES/cnn/cnn_digits.safetensors
cp "$CNN" "$T/m.safetensors"
"$MQ" -q quantize "$T/m.safetensors" -o "$T/q.safetensors" || notok setup "quantize failed"

# global options before and after the subcommand, for every command
for pos in before after; do
    for c in info validate compare dequantize quantize; do
        case $c in
        info|validate) args="$T/q.safetensors" ;;
        compare) args="$T/m.safetensors $T/q.safetensors" ;;
        dequantize) args="$T/q.safetensors -o $T/d_$pos.safetensors" ;;
        quantize) args="$T/m.safetensors --dry-run" ;;
        esac
        if [ $pos = before ]; then
            expect_exit 0 "global_${pos}_$c" -- "$MQ" -q --threads 2 --no-progress -v --json $c $args
        else
            expect_exit 0 "global_${pos}_$c" -- "$MQ" $c $args --quiet --threads=2 --no-progress -v --json
        fi
    done
done
expect_exit 0 global_calibrate_quiet_help -- "$MQ" calibrate --quiet --help
expect_out global_calibrate_help_lists_globals '--threads N'

# unknown option given last is unknown, not "needs a value"
expect_exit 2 unknown_last -- "$MQ" info "$T/q.safetensors" --verbos
expect_out unknown_last_msg "unknown option '--verbos'"
expect_exit 2 unknown_quantize -- "$MQ" quantize "$T/m.safetensors" --frobnicate
expect_out unknown_quantize_msg "^monoquant quantize: unknown option '--frobnicate'"
# a valued option without its value says so, first or last
expect_exit 2 needs_value_last -- "$MQ" calibrate --activations "$T/x" -o "$T/c.safetensors" --model
expect_out needs_value_last_msg "monoquant calibrate: --model needs a value"
expect_exit 2 needs_value_before_option -- "$MQ" dequantize "$T/q.safetensors" -o --json
expect_out needs_value_before_option_msg "^monoquant dequantize: --output needs a value"
expect_exit 2 flag_with_value -- "$MQ" info "$T/q.safetensors" --json=yes
expect_out flag_with_value_msg "--json takes no value"
# enumerated values are listed
expect_exit 2 bits_lists -- "$MQ" quantize "$T/m.safetensors" --bits 3
expect_out bits_lists_msg "--bits: invalid value '3' \(valid: 8, 4, 16\)"
expect_exit 2 dtype_lists -- "$MQ" dequantize "$T/q.safetensors" -o "$T/x.safetensors" --dtype int8
expect_out dtype_lists_msg "--type: invalid value 'int8' \(valid: fp32, fp16, bf16\)"
expect_exit 2 int_range -- "$MQ" info "$T/q.safetensors" --threads 5000
expect_out int_range_msg "--threads: expected an integer from 0 to 1024, got '5000'"

# one dtype vocabulary: --type and --dtype, canonical names and the old spellings
for v in fp16 f16 F16 float16; do
    expect_exit 0 "quantize_type_$v" -- "$MQ" quantize "$T/m.safetensors" --dry-run --type $v -q
    expect_exit 0 "quantize_dtype_$v" -- "$MQ" quantize "$T/m.safetensors" --dry-run --dtype $v -q
done
for v in fp32 f32 F32 fp16 f16 bf16 BF16; do
    expect_exit 0 "dequantize_type_$v" -- "$MQ" dequantize "$T/q.safetensors" -o "$T/d_$v.safetensors" --type $v
done
"$MQ" info --json "$T/d_f16.safetensors" | grep -q '"F16"' && ok dequantize_f16_is_f16 || notok dequantize_f16_is_f16 "no F16 tensor"

# --help for every command: exit 0, the command's usage and the global options
for c in info quantize dequantize validate compare calibrate; do
    expect_exit 0 "help_$c" -- "$MQ" $c --help
    expect_out "help_${c}_usage" "^usage: monoquant $c "
    expect_out "help_${c}_globals" "-f, --force"
    expect_exit 0 "help_cmd_$c" -- "$MQ" help $c
    expect_out "help_cmd_${c}_usage" "^usage: monoquant $c "
done
expect_exit 0 help_top -- "$MQ" --help
expect_out help_top_exit_codes "130"
expect_exit 2 unknown_command -- "$MQ" frobnicate
expect_out unknown_command_msg "unknown command 'frobnicate'"
finish
