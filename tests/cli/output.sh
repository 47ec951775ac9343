#!/bin/sh
# Output policy of every writing command: existing destinations, input == output, kinds of
# destination, modes, standard output, default names.
. tests/cli/lib.sh

CNN=$FIXTURES/cnn/cnn_digits.safetensors
cp "$CNN" "$T/m.safetensors"
cp "$FIXTURES/cnn/cnn_digits.pt" "$T/m.pt"
"$MQ" -q quantize "$T/m.safetensors" -o "$T/q.safetensors"
sum_q=$(cksum < "$T/q.safetensors")

# an existing file is kept without -f, replaced with it, its mode kept
echo old > "$T/exists.safetensors"; chmod 600 "$T/exists.safetensors"
expect_exit 2 exists_refused -- "$MQ" dequantize "$T/q.safetensors" -o "$T/exists.safetensors"
expect_out exists_refused_msg "^monoquant: error: .*exists.safetensors already exists; -f/--force replaces it$"
[ "$(cat "$T/exists.safetensors")" = old ] && ok exists_untouched || notok exists_untouched "changed"
expect_exit 0 exists_forced -- "$MQ" dequantize "$T/q.safetensors" -o "$T/exists.safetensors" -f
[ "$(stat -c %a "$T/exists.safetensors")" = 600 ] && ok mode_kept || notok mode_kept "$(stat -c %a "$T/exists.safetensors")"
# input == output, for every command, even with -f
expect_exit 2 dq_in_is_out -- "$MQ" dequantize "$T/q.safetensors" -o "$T/q.safetensors" -f
expect_out dq_in_is_out_msg "the output is the input"
ln "$T/q.safetensors" "$T/hardlink.safetensors"
expect_exit 2 dq_in_is_out_link -- "$MQ" dequantize "$T/q.safetensors" -o "$T/hardlink.safetensors" -f
expect_out dq_in_is_out_link_msg "the output is the input"
expect_exit 2 q_in_is_out -- "$MQ" quantize "$T/m.safetensors" -o "$T/m.safetensors" -f
expect_out q_in_is_out_msg "the output is the input"
[ "$(cksum < "$T/q.safetensors")" = "$sum_q" ] && ok input_unchanged || notok input_unchanged "changed"
# only regular files, even with -f
mkdir "$T/adir"; mkfifo "$T/afifo"; ln -s "$T/exists.safetensors" "$T/alink"
expect_exit 2 dest_dir -- "$MQ" dequantize "$T/q.safetensors" -o "$T/adir" -f
expect_out dest_dir_msg "is a directory"
expect_exit 2 dest_fifo -- "$MQ" dequantize "$T/q.safetensors" -o "$T/afifo" -f
expect_out dest_fifo_msg "is a FIFO"
[ -p "$T/afifo" ] && ok fifo_kept || notok fifo_kept "replaced"
expect_exit 2 dest_link -- "$MQ" dequantize "$T/q.safetensors" -o "$T/alink" -f
expect_out dest_link_msg "symbolic link"
[ -L "$T/alink" ] && ok link_kept || notok link_kept "replaced"
expect_exit 2 dest_device -- "$MQ" dequantize "$T/q.safetensors" -o /dev/null -f
expect_out dest_device_msg "/dev/null: the destination is a character device"
[ -c /dev/null ] && ok device_kept || notok device_kept "replaced"
# standard output: safetensors streams, the others say why not
"$MQ" dequantize "$T/q.safetensors" -o - > "$T/stdout.safetensors" 2> "$T/err" && ok stdout_exit || notok stdout_exit "$(cat "$T/err")"
expect_exit 0 stdout_readable -- "$MQ" info "$T/stdout.safetensors"
[ ! -e ./- ] && [ ! -e "$T/-" ] && ok stdout_no_file || notok stdout_no_file "a file named -"
expect_exit 5 stdout_pt -- "$MQ" dequantize "$T/q.safetensors" -o - --format pt
expect_out stdout_pt_msg "cannot be streamed"
expect_exit 2 stdout_quantize -- "$MQ" quantize "$T/m.safetensors" -o -
expect_out stdout_quantize_msg "cannot be streamed"
# default names: m.pt and m.safetensors side by side do not collide
expect_exit 0 default_st -- "$MQ" quantize "$T/m.safetensors" -q
expect_exit 0 default_pt -- "$MQ" quantize "$T/m.pt" -q
[ -f "$T/m.safetensors.int8.safetensors" ] && [ -f "$T/m.pt.int8.safetensors" ] && ok default_names_differ || notok default_names_differ "$(ls "$T")"
# a second default run refuses to replace
expect_exit 2 default_exists -- "$MQ" quantize "$T/m.pt"
expect_out default_exists_msg "already exists; -f/--force replaces it"
# a NAME_MAX-long destination name
long=$(printf '%0243d' 0).safetensors
expect_exit 0 name_max -- "$MQ" dequantize "$T/q.safetensors" -o "$T/$long"
[ -f "$T/$long" ] && ok name_max_written || notok name_max_written "missing"
# on a terminal, monoquant asks; only "y" replaces (script(1) gives the command a terminal)
if command -v script > /dev/null 2>&1; then
    echo old > "$T/ask.safetensors"
    echo n | script -qec "'$MQ' --no-progress dequantize '$T/q.safetensors' -o '$T/ask.safetensors'" /dev/null > "$T/out" 2>&1
    expect_out ask_question "ask.safetensors already exists; replace it\? \[y/N\]"
    expect_out ask_declined "ask.safetensors already exists; not replaced"
    [ "$(cat "$T/ask.safetensors")" = old ] && ok ask_no_keeps || notok ask_no_keeps "replaced"
    echo y | script -qec "'$MQ' --no-progress dequantize '$T/q.safetensors' -o '$T/ask.safetensors'" /dev/null > "$T/out" 2>&1
    "$MQ" info "$T/ask.safetensors" > /dev/null 2>&1 && ok ask_yes_replaces || notok ask_yes_replaces "not replaced"
    script -qec "'$MQ' dequantize '$T/q.safetensors' -o -" /dev/null > "$T/out" 2>&1
    expect_out stdout_terminal_refused "standard output is a terminal"
else
    echo "skip ask: no script(1) to give monoquant a terminal"
fi
# no temporary file left by any of the above
[ -z "$(ls -A "$T" | grep '^\.monoquant-')" ] && ok no_temporaries || notok no_temporaries "$(ls -A "$T")"
finish
