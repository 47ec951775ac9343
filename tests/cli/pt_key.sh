# --key on every command that opens a checkpoint: a torch.save training checkpoint
# {"model": state_dict, "optimizer": {...}, "epoch": 3} needs the entry that holds the weights;
# without --key the error lists the candidates and names the option.
. tests/cli/lib.sh

OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} "${PYTHON:-/usr/bin/python3}" - "$T" <<'PY'
import sys, torch
d = sys.argv[1]
g = torch.Generator().manual_seed(7)
sd = {"fc1.weight": torch.randn(64, 32, generator=g), "fc1.bias": torch.randn(64, generator=g),
      "fc2.weight": torch.randn(16, 64, generator=g)}
opt = {"state": {0: {"exp_avg": torch.randn(64, 32, generator=g), "step": torch.tensor(5.0)}},
       "param_groups": [{"lr": 0.1, "params": [0]}]}
torch.save({"model": sd, "optimizer": opt, "epoch": 3}, d + "/ckpt.pt")
torch.save(sd, d + "/flat.pt")
# recorded inputs of fc1 and fc2 (one batch), for calibrate
torch.save({"fc1": torch.randn(8, 32, generator=g), "fc2": torch.randn(8, 64, generator=g)},
           d + "/acts.pt")
PY
[ -s "$T/ckpt.pt" ] && ok made_checkpoint || notok made_checkpoint "torch.save failed"
CK="$T/ckpt.pt"
HINT="several entries hold tensors \('model', 'optimizer'\).*--key"

# info
expect_exit 2 info_ambiguous -- "$MQ" info "$CK"
expect_out info_ambiguous_hint "$HINT"
expect_exit 0 info_key -- "$MQ" info --key model "$CK"
expect_out info_key_tensors '^tensors: +3$'
expect_out info_key_names 'fc2\.weight +F32 +\[16, 64\]'
expect_exit 0 info_key_top -- "$MQ" info "$CK" --key=.
expect_out info_key_top_dotted 'optimizer\.state\.0\.exp_avg +F32 +\[64, 32\]'
expect_exit 2 info_key_unknown -- "$MQ" info --key nope "$CK"
expect_out info_key_unknown_lists "no entry 'nope' in the checkpoint \(it has 'model', 'optimizer', 'epoch'\)"
expect_exit 2 info_key_no_value -- "$MQ" info "$CK" --key
# a safetensors input ignores the key
expect_exit 0 info_key_safetensors -- "$MQ" info --key model "$FIXTURES/cnn/cnn_digits.safetensors"

# quantize: same tensors as from the plain state dict
expect_exit 2 q_ambiguous -- "$MQ" quantize --format native "$CK" -o "$T/q.safetensors"
expect_out q_ambiguous_hint "$HINT"
[ ! -e "$T/q.safetensors" ] && ok q_ambiguous_writes_nothing || notok q_ambiguous_writes_nothing "file written"
expect_exit 0 q_key -- "$MQ" quantize --format native "$CK" --key model -o "$T/q.safetensors" -q
expect_exit 0 q_flat -- "$MQ" quantize --format native "$T/flat.pt" -o "$T/qflat.safetensors" -q
if cmp -s "$T/q.safetensors" "$T/qflat.safetensors"; then ok q_key_same_as_flat
else notok q_key_same_as_flat "outputs differ"; fi
expect_exit 0 q_key_pt -- "$MQ" quantize --format native "$CK" --key model -o "$T/q.pt" -q
echo "key = model" > "$T/key.conf"
expect_exit 0 q_key_config -- "$MQ" quantize --format native "$CK" --config "$T/key.conf" -o "$T/qc.safetensors" -q
cmp -s "$T/qc.safetensors" "$T/qflat.safetensors" && ok q_key_config_same || notok q_key_config_same "outputs differ"

# validate: --key for every input, --reference-key for the reference alone
expect_exit 2 v_ambiguous_reference -- "$MQ" validate "$T/q.safetensors" --reference "$CK"
expect_out v_ambiguous_hint "$HINT"
expect_exit 0 v_key -- "$MQ" validate "$T/q.safetensors" --reference "$CK" --key model
expect_out v_key_sqnr 'fc1\.weight +int8 +[0-9.]+'
expect_exit 2 v_key_on_flat_pt -- "$MQ" validate "$T/q.pt" --reference "$CK" --key model
expect_exit 0 v_reference_key -- "$MQ" validate "$T/q.pt" --reference "$CK" --reference-key model
expect_out v_reference_key_sqnr 'fc2\.weight +int8 +[0-9.]+'

# compare
expect_exit 2 c_ambiguous -- "$MQ" compare "$CK" "$T/q.pt"
expect_out c_ambiguous_hint "$HINT"
expect_exit 0 c_key_a -- "$MQ" compare "$CK" "$T/q.pt" --key-a model
expect_out c_key_a_summary '2 tensors differ, 0 only in A, 0 only in B'
expect_exit 0 c_key_both -- "$MQ" compare "$CK" "$T/q.safetensors" --key model
expect_out c_key_both_summary '2 tensors differ, 0 only in A, 0 only in B'
expect_exit 0 c_key_b -- "$MQ" compare "$T/flat.pt" "$CK" --key-b model
expect_out c_key_b_identical '0 tensors differ, 0 only in A, 0 only in B'

# dequantize: a quantized state dict nested in a training checkpoint
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} "${PYTHON:-/usr/bin/python3}" - "$T" <<'PY'
import sys, torch
d = sys.argv[1]
q = torch.load(d + "/q.pt")
torch.save({"model": q, "optimizer": {"state": {0: {"m": torch.zeros(3)}}}}, d + "/qnested.pt")
PY
expect_exit 2 dq_ambiguous -- "$MQ" dequantize "$T/qnested.pt" -o "$T/dq.safetensors"
expect_out dq_ambiguous_hint "several entries hold tensors.*--key"
expect_exit 0 dq_key -- "$MQ" dequantize "$T/qnested.pt" --key model -o "$T/dq.safetensors" -q
expect_exit 0 dq_plain -- "$MQ" dequantize "$T/q.pt" -o "$T/dq2.safetensors" -q
cmp -s "$T/dq.safetensors" "$T/dq2.safetensors" && ok dq_key_same || notok dq_key_same "outputs differ"

# calibrate: the key selects the model's weights; activation files are plain
expect_exit 2 cal_ambiguous -- "$MQ" calibrate --model "$CK" --activations "$T/acts.pt" -o "$T/s.safetensors"
expect_out cal_ambiguous_hint "$HINT"
expect_exit 0 cal_key -- "$MQ" calibrate --model "$CK" --key model --activations "$T/acts.pt" -o "$T/s.safetensors" --json
expect_out cal_key_layers '"layer": "fc1".*"rows": 8'
expect_out cal_key_fc2 '"layer": "fc2"'
finish
