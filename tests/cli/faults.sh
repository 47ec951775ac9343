#!/bin/sh
# Fault injection around the writers of quantize, dequantize and calibrate, on safetensors
# and .pt outputs: a full disk, EIO on fsync, SIGINT/SIGTERM/SIGHUP at several points of a
# large write, an input truncated while it is read, every kind of destination, NAME_MAX
# names. Each failing run must give its exit code and one line on stderr, leave the
# destination byte-identical to before, leave no temporary file and the input unchanged.
# Faults come from build/tests/libmqfault.so (tests/fault/inject.c) through LD_PRELOAD.
. tests/cli/lib.sh

FAULT=$(cd "${BUILD:-build}" && pwd)/tests/libmqfault.so
PY=${PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=python3
if [ ! -f "$FAULT" ]; then
    echo "skip faults: $FAULT not built (make unit)"
    finish; exit 0
fi

# big.safetensors: 12 Linear weights [1024, 1024] F32 (48 MB), values in [-1, 1)
"$PY" - "$T" <<'PYEOF'
import json, struct, sys
cols = 1024
row = struct.pack(f"<{cols}f", *[((j * 37) % 200 - 100) / 100.0 for j in range(cols)])
def write(name, tensors):  # tensors: [(name, rows)], each [rows, cols] F32 of `row`
    hdr, off = {}, 0
    for t, rows in tensors:
        hdr[t] = {"dtype": "F32", "shape": [rows, cols], "data_offsets": [off, off + rows * cols * 4]}
        off += rows * cols * 4
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(f"{sys.argv[1]}/{name}.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for _, rows in tensors:
            for _ in range(rows):
                f.write(row)
write("big", [(f"l{i}.weight", 1024) for i in range(12)])
write("cal_model", [("l.weight", 64)])    # calibration: a Linear [64, 1024]
write("cal_acts", [("l", 256)])           # and its activations [256, 1024] (1 MB)
PYEOF
"$MQ" -q quantize "$T/big.safetensors" -o "$T/bigq.safetensors" --no-error-stats ||
    notok setup "quantize of the big model failed"
mkdir "$T/dst"

# job NAME: sets CMD (the command, output last-but-one is $DEST) for a command and output
#   q.st q.pt: quantize big -> safetensors / pt;  d.st d.pt: dequantize;  c.st: calibrate
set_job() {
    case $1 in
    q.*) IN=$T/big.safetensors ;;
    d.*) IN=$T/bigq.safetensors ;;
    c.*) IN=$T/cal_acts.safetensors ;;
    esac
    DEST=$T/dst/dest.${1#*.}
    case $1 in
    q.*) set -- quantize "$IN" --no-error-stats ;;
    d.*) set -- dequantize "$IN" ;;
    c.*) set -- calibrate --model "$T/cal_model.safetensors" --activations "$IN" --hessian ;;
    esac
    CMD="$*"
}

sum_of() { if [ -e "$1" ]; then cksum < "$1"; else echo none; fi; }

# check NAME WANT_EXIT PATTERN: runs "$MQ -q $CMD -o $DEST -f" under the faults set in the
# environment; asserts exit code, one stderr line matching PATTERN, DEST as before, no
# temporary file, input unchanged (unless KEEP_INPUT=0).
check() {
    name=$1; want=$2; pat=$3
    before=$(sum_of "$DEST")
    in_before=$(cksum < "$IN")
    rm -f "$T/faultlog"
    # shellcheck disable=SC2086
    env LD_PRELOAD="$FAULT" MQF_LOG="$T/faultlog" "$MQ" -q $CMD -o "$DEST" -f > "$T/stdout" 2> "$T/err"
    got=$?
    [ "$got" -eq "$want" ] && ok "$name" || notok "$name" "exit $got, expected $want: $(head -c 300 "$T/err")"
    [ -s "$T/faultlog" ] && ok "${name}_fired" || notok "${name}_fired" "the fault was not injected"
    lines=$(wc -l < "$T/err")
    [ "$lines" -eq 1 ] && grep -Eq -- "$pat" "$T/err" && ok "${name}_message" ||
        notok "${name}_message" "$lines lines, expected one matching /$pat/: $(head -c 300 "$T/err")"
    after=$(sum_of "$DEST")
    [ "$before" = "$after" ] && ok "${name}_destination_kept" || notok "${name}_destination_kept" "changed"
    left=$(ls -A "$T/dst" | grep '^\.monoquant-')
    [ -z "$left" ] && ok "${name}_no_temporary" || notok "${name}_no_temporary" "$left"
    if [ "${KEEP_INPUT:-1}" = 1 ]; then
        [ "$(cksum < "$IN")" = "$in_before" ] && ok "${name}_input_unchanged" || notok "${name}_input_unchanged" "changed"
    fi
}

for job in q.safetensors q.pt d.safetensors d.pt c.safetensors; do
    set_job "$job"
    j=$(echo "$job" | tr . _)
    # an existing destination (replaced only on success), then faults
    printf 'previous contents\n' > "$DEST"
    MQF_ENOSPC_AT=0 check "${j}_disk_full_at_start" 5 "No space left on device" 
    export MQF_ENOSPC_AT=5000000
    case $job in c.*) MQF_ENOSPC_AT=4000 ;; esac
    check "${j}_disk_full_midway" 5 "write failed: No space left on device"
    unset MQF_ENOSPC_AT
    MQF_FSYNC_EIO=1 check "${j}_fsync_eio" 5 "fsync failed: Input/output error"
    for at in 1 6000000 -1 -2; do
        case $job:$at in c.*:6000000) continue ;; esac
        MQF_SIGNAL_AT=$at:2 check "${j}_sigint_at_$at" 130 "^monoquant: interrupted by SIGINT; temporary file removed, nothing written$"
    done
    case $job in c.*) mid=1 ;; *) mid=6000000 ;; esac
    MQF_SIGNAL_AT=$mid:15 check "${j}_sigterm" 143 "^monoquant: interrupted by SIGTERM; temporary file removed"
    MQF_SIGNAL_AT=$mid:1 check "${j}_sighup" 129 "^monoquant: interrupted by SIGHUP; temporary file removed"
    # a run without faults replaces it, keeping its mode
    chmod 640 "$DEST"
    expect_exit 0 "${j}_forced_replace" -- "$MQ" -q $CMD -o "$DEST" -f
    [ "$(stat -c %a "$DEST")" = 640 ] && ok "${j}_mode_kept" || notok "${j}_mode_kept" "$(stat -c %a "$DEST")"
    rm -f "$DEST"
done

# an input truncated while it is read: exit 5, temporary files removed, destination kept
cp "$T/big.safetensors" "$T/shrinking.safetensors"
IN=$T/shrinking.safetensors; DEST=$T/dst/dest.safetensors
printf 'previous contents\n' > "$DEST"
CMD="quantize $IN --no-error-stats"
KEEP_INPUT=0 MQF_TRUNCATE_AT=4000000:$IN check q_input_truncated 5 "^monoquant: error: input changed while reading"
"$MQ" -q quantize "$T/big.safetensors" -o "$T/shrinkq.safetensors" --no-error-stats
IN=$T/shrinkq.safetensors
CMD="dequantize $IN"
KEEP_INPUT=0 MQF_TRUNCATE_AT=8000000:$IN check d_input_truncated 5 "^monoquant: error: input changed while reading"
cp "$T/cal_acts.safetensors" "$T/shrink_acts.safetensors"
IN=$T/shrink_acts.safetensors
CMD="calibrate --model $T/cal_model.safetensors --activations $IN"
KEEP_INPUT=0 MQF_TRUNCATE_ON_MAP=$IN check c_input_truncated 5 "^monoquant: error: input changed while reading"

# destination kinds, for each writing command: refused before any work, left as they were
mkdir "$T/kinds"; mkdir "$T/kinds/dir"; mkfifo "$T/kinds/fifo"
printf 'target\n' > "$T/kinds/target"; ln -s "$T/kinds/target" "$T/kinds/link"
printf 'read-only\n' > "$T/kinds/ro"; chmod 444 "$T/kinds/ro"
printf 'existing\n' > "$T/kinds/existing"
for job in q.safetensors d.safetensors c.safetensors; do
    set_job "$job"
    j=${job%%.*}
    for kind in dir fifo link /dev/null; do
        case $kind in /*) d=$kind; k=device ;; *) d=$T/kinds/$kind; k=$kind ;; esac
        before=$(ls -ld "$d" | cut -c1)
        expect_exit 2 "${j}_dest_$k" -- "$MQ" -q $CMD -o "$d" -f
        expect_out "${j}_dest_${k}_says" "the destination is (a directory|a FIFO|a symbolic link|a character device)"
        [ "$(ls -ld "$d" | cut -c1)" = "$before" ] && ok "${j}_dest_${k}_kept" || notok "${j}_dest_${k}_kept" "changed"
    done
    [ "$(cat "$T/kinds/target")" = target ] && ok "${j}_link_target_kept" || notok "${j}_link_target_kept" "changed"
    for kind in ro existing; do
        sum=$(cksum < "$T/kinds/$kind")
        expect_exit 2 "${j}_dest_${kind}_without_force" -- "$MQ" -q $CMD -o "$T/kinds/$kind"
        expect_out "${j}_dest_${kind}_says" "already exists; -f/--force replaces it"
        [ "$(cksum < "$T/kinds/$kind")" = "$sum" ] && ok "${j}_dest_${kind}_kept" || notok "${j}_dest_${kind}_kept" "changed"
    done
    [ -z "$(ls -A "$T/kinds" | grep '^\.monoquant-')" ] && ok "${j}_kinds_no_temporary" || notok "${j}_kinds_no_temporary" "left"
done
expect_exit 0 ro_forced -- "$MQ" -q dequantize "$T/bigq.safetensors" -o "$T/kinds/ro" -f
[ "$(stat -c %a "$T/kinds/ro")" = 444 ] && ok ro_stays_read_only || notok ro_stays_read_only "$(stat -c %a "$T/kinds/ro")"

# NAME_MAX-long destination names: written, and cleaned up after a failure
long=$(printf '%0243d' 7).safetensors
for job in q.safetensors d.safetensors c.safetensors; do
    set_job "$job"
    j=${job%%.*}
    DEST=$T/dst/$long
    MQF_ENOSPC_AT=0 check "${j}_name_max_disk_full" 5 "No space left on device"
    expect_exit 0 "${j}_name_max" -- "$MQ" -q $CMD -o "$DEST"
    [ -f "$DEST" ] && ok "${j}_name_max_written" || notok "${j}_name_max_written" "missing"
    rm -f "$DEST"
done

# a stale temporary file of a dead run is named, with how to remove it
sh -c 'exit 0' & wait $!; dead=$!
: > "$T/dst/.monoquant-$dead-0.tmp"
expect_exit 0 stale_noted -- "$MQ" dequantize "$T/bigq.safetensors" -o "$T/dst/fresh.safetensors"
expect_out stale_noted_msg "holds 1 temporary file of interrupted monoquant runs \(\.monoquant-$dead-0\.tmp\); remove them with: rm .*/\.monoquant-\*\.tmp"
finish
