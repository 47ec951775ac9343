# PyTorch checkpoints through the CLI: a torch.save fixture opens; hostile and unsupported
# archives fail with exit 5 and a message naming the file.
. tests/cli/lib.sh

expect_exit 0 info_fixture_pt -- "$MQ" info "$FIXTURES/cnn/cnn_digits.pt"
expect_out info_fixture_pt_format 'format: +pytorch'
expect_out info_fixture_pt_tensor 'conv1.weight +F32 +\[32, 1, 3, 3\]'

# data.pkl calling os.system: refused, nothing runs
"${PYTHON:-/usr/bin/python3}" - "$T/evil.pt" "$T/pwned" <<'PY'
import sys, zipfile
payload = b"\x80\x02cos\nsystem\nX" + len("touch " + sys.argv[2]).to_bytes(4, "little") + \
    ("touch " + sys.argv[2]).encode() + b"\x85R."
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("archive/data.pkl", payload)
    z.writestr("archive/version", "3\n")
PY
expect_exit 5 info_evil_pt -- "$MQ" info "$T/evil.pt"
expect_out info_evil_pt_message "evil.pt: pickle opcode 0x63 at byte 2: global 'os.system' is not allowed"
if [ -e "$T/pwned" ]; then notok evil_pt_no_side_effect "the payload ran"; else ok evil_pt_no_side_effect; fi

head -c 100 "$FIXTURES/cnn/cnn_digits.pt" > "$T/truncated.pt"
expect_exit 5 info_truncated_pt -- "$MQ" info "$T/truncated.pt"
expect_out info_truncated_pt_message 'truncated.pt: .*zip'
finish
