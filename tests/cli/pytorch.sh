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

# .pt output carries the same quantization_config, error figures included, as safetensors
for ext in safetensors pt; do
    expect_exit 0 "q_cnn_int4_$ext" -- "$MQ" quantize "$FIXTURES/cnn/cnn_digits.safetensors" --format native --bits 4 --no-default-skip -o "$T/cnn4.$ext" -q
    "$MQ" info --json "$T/cnn4.$ext" > "$T/cnn4.$ext.json"
done
if "${PYTHON:-/usr/bin/python3}" - "$T/cnn4.safetensors.json" "$T/cnn4.pt.json" <<'PY'
import json, sys
st, pt = (json.load(open(p))["metadata"] for p in sys.argv[1:])
cs, cp = (json.loads(m["quantization_config"]) for m in (st, pt))
assert cs == cp, "configs differ"
q = cp["quantized"]
assert len(q) == 4 and all("sqnr_db" in v and "rel_error" in v for v in q.values()), q
assert pt["quantization_config"] == pt["quantization_config"].rstrip(), "padding left in .pt"
del st["format"]  # the safetensors convention entry
assert {k: v for k, v in st.items() if k != "quantization_config"} == \
       {k: v for k, v in pt.items() if k != "quantization_config"}, "other metadata differs"
PY
then ok pt_config_has_error_figures; else notok pt_config_has_error_figures "see above"; fi

head -c 100 "$FIXTURES/cnn/cnn_digits.pt" > "$T/truncated.pt"
expect_exit 5 info_truncated_pt -- "$MQ" info "$T/truncated.pt"
expect_out info_truncated_pt_message 'truncated.pt: .*zip'
finish
