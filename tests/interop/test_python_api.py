"""The Python package on small models: Quantized* layers against torch, the same bytes as
the CLI, save/load, calibration (hooks, save, exact merge), MultiheadAttention, the original
untouched, and hostile or mistyped arguments giving clear exceptions."""
import filecmp
import os

import torch
from torch import nn

from harness import TMP, case, finish, mq
from pkg import monoquant

torch.manual_seed(0)
torch.set_num_threads(1)


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 16, 3, padding=1, stride=2)
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


def snapshot(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def same_state(m, snap):
    sd = m.state_dict()
    return sd.keys() == snap.keys() and all(torch.equal(sd[k], snap[k]) for k in snap)


MODEL = Small().eval()
X = torch.randn(8, 4, 8, 8)


@case
def quantize_leaves_original_untouched():
    snap = snapshot(MODEL)
    q, rep = monoquant.quantize(MODEL, bits=8)
    assert same_state(MODEL, snap), "the original changed"
    assert isinstance(MODEL.fc1, nn.Linear) and isinstance(q.fc1, monoquant.nn.QuantizedLinear)
    assert isinstance(q.conv, monoquant.nn.QuantizedConv2d)
    assert set(rep.quantized) == {"conv.weight", "fc1.weight", "fc2.weight"}, rep.quantized
    assert rep.skipped["fc1.bias"] == "bias (1-D)", rep.skipped
    assert rep["fc1.weight"].sqnr_db > 35 and rep["fc1.weight"].activations == "dynamic"
    assert rep.bytes_out < rep.bytes_in / 3


@case
def layers_close_to_torch_int8_dynamic():
    q, _ = monoquant.quantize(MODEL, bits=8)
    with torch.no_grad():
        ref, got = MODEL(X), q(X)
    err = (got - ref).norm() / ref.norm()
    assert err < 0.02, f"relative error {err}"


@case
def weight_only_matches_dequantized_weights():
    """Weight-only INT4: the kernels equal torch with the dequantized weights, up to
    summation order."""
    q, _ = monoquant.quantize(MODEL, bits=4, default_skip=False)
    path = os.path.join(TMP, "small4.safetensors")
    monoquant.save(q, path)
    deq = monoquant.dequantize(path)
    ref = Small().eval()
    ref.load_state_dict(deq)
    with torch.no_grad():
        a, b = ref(X), q(X)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), (a - b).abs().max()
    assert q.fc1.act == 0 and q.fc1.qtype == 3  # weight-only INT4


@case
def dtypes_and_batch_shapes():
    q, _ = monoquant.quantize(MODEL, bits=8)
    lin = q.fc2
    x = torch.randn(2, 3, 5, 64)
    with torch.no_grad():
        y = lin(x)
        assert y.shape == (2, 3, 5, 10) and y.dtype == torch.float32
        for dt in (torch.bfloat16, torch.float16):
            yd = lin(x.to(dt))
            assert yd.dtype == dt and yd.shape == y.shape
            assert torch.allclose(yd.float(), y, rtol=0.05, atol=0.05)
        assert lin(torch.randn(0, 64)).shape == (0, 10)
        assert lin(torch.randn(64)).shape == (10,)
        # a non-contiguous view is copied once, never misread
        big = torch.randn(64, 12)
        assert torch.equal(lin(big.t()), lin(big.t().contiguous()))
        assert torch.equal(lin(big[:, ::2].t().contiguous()), lin(big[:, ::2].t()))
        # unbatched conv input
        assert torch.allclose(q.conv(X[0]), q.conv(X[:1])[0])
        # the fast path (dense f32 [M, K]) and the general one agree; a view with the
        # negative bit set is read as its values, not as the memory under it
        x2 = torch.randn(5, 64)
        assert torch.equal(lin(x2), lin(x2.unsqueeze(0))[0])
        assert torch.equal(lin(torch._neg_view(x2)), lin(-x2))
        assert torch.equal(lin(nn.Parameter(x2, requires_grad=False)), lin(x2))
    # hooks and the module call protocol still run (forward is called directly only when
    # nn.Module.__call__ would do nothing else)
    seen = []
    h = lin.register_forward_pre_hook(lambda m, i: seen.append("pre"))
    h2 = lin.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    h3 = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append("g"))
    with torch.no_grad():
        lin(torch.randn(2, 64))
    h.remove(), h2.remove(), h3.remove()
    assert seen == ["pre", "g", (2, 10)], seen


def raises(exc, fn, *words):
    try:
        fn()
    except exc as e:
        msg = str(e)
        for w in words:
            assert w in msg, f"{w!r} not in {msg!r}"
        return
    raise AssertionError(f"no {exc.__name__} raised")


@case
def hostile_arguments():
    q, _ = monoquant.quantize(MODEL, bits=8)
    lin = q.fc2
    with torch.no_grad():
        raises(TypeError, lambda: lin(torch.randn(3, 64, dtype=torch.float64)), "float64")
        raises(TypeError, lambda: lin(torch.randint(0, 5, (3, 64))), "int64")
        raises(TypeError, lambda: lin([1.0] * 64), "torch.Tensor")
        raises(ValueError, lambda: lin(torch.randn(3, 63)), "in_features=64")
        raises(TypeError, lambda: lin(torch.randn(3, 64, device="meta")), "meta")
        raises(ValueError, lambda: q.conv(torch.randn(2, 3, 8, 8)), "[N, 4, H, W]")
    # autograd through the kernels is refused
    raises(RuntimeError, lambda: lin(torch.randn(3, 64, requires_grad=True)), "inference-only")
    raises(RuntimeError, lambda: q.state_dict(), "monoquant.save")
    # quantize arguments
    raises(ValueError, lambda: monoquant.quantize(MODEL, bits=3), "bits")
    raises(ValueError, lambda: monoquant.quantize(MODEL, method="gptq"), "calibration")
    raises(ValueError, lambda: monoquant.quantize(MODEL, method="best"), "method")
    raises(ValueError, lambda: monoquant.quantize(MODEL, group_size=0), "group_size")
    raises(TypeError, lambda: monoquant.quantize(MODEL, skip="fc1.*"), "list of glob")
    raises(TypeError, lambda: monoquant.quantize("model.pt"), "nn.Module or a state_dict")
    raises(TypeError, lambda: monoquant.quantize(MODEL, layer_types=("Linear",)), "layer_types")
    raises(ValueError, lambda: monoquant.quantize(MODEL, activations="fast"), "activations")
    raises(TypeError, lambda: monoquant.QuantizationConfig(bitz=4), "bitz")
    # a state_dict with integer weights (already quantized?) or a CUDA-like / odd tensor
    sd = {k: v.clone() for k, v in MODEL.state_dict().items()}
    bad = dict(sd, **{"fc1.weight": sd["fc1.weight"].to(torch.int8)})
    intw = Small()
    intw.fc1.weight = nn.Parameter(intw.fc1.weight.data.to(torch.int8), requires_grad=False)
    raises(TypeError, lambda: monoquant.quantize(intw), "fc1.weight", "floating-point")
    raises(TypeError, lambda: monoquant.quantize(dict(sd, x=torch.empty(2, device="meta"))),
           "'x' is on meta")
    raises(TypeError, lambda: monoquant.quantize({"w": torch.quantize_per_tensor(
        torch.randn(4, 4), 0.1, 0, torch.qint8)}), "already a quantized tensor")
    raises(TypeError, lambda: monoquant.quantize({1: torch.randn(4, 4)}), "not a string")
    # integer buffers of a state_dict are kept, as the CLI keeps them
    out, rep = monoquant.quantize(dict(bad, **{"fc1.weight": sd["fc1.weight"]},
                                       steps=torch.tensor([3])))
    assert rep.skipped["steps"].startswith("I64"), rep.skipped["steps"]
    # errors from the library carry its message and status
    try:
        monoquant.info(os.path.join(TMP, "missing.safetensors"))
        raise AssertionError("no error")
    except monoquant.MonoquantError as e:
        assert e.status_name == "I/O error" or e.status == 2, (e.status, e.status_name)
        assert "missing.safetensors" in e.message


@case
def same_bytes_as_cli():
    """The state_dict written as a checkpoint and quantized by the CLI gives the very file
    that quantize() + save() writes, for several settings and both formats."""
    src = os.path.join(TMP, "small.safetensors")
    import mqlib
    mqlib.write(src, MODEL.state_dict())
    for tag, kw, cli in [("i8", {}, []), ("i4g32", {"bits": 4, "group_size": 32},
                                          ["--bits", "4", "--group-size", "32"]),
                         ("u8skip", {"bits": "uint8", "skip": ["fc2.*"]},
                          ["--type", "uint8", "--exclude", "fc2.*"]),
                         ("mse", {"method": "mse", "min_params": 5000},
                          ["--search", "mse", "--min-params", "5000"])]:
        for ext in ("safetensors", "pt"):
            q, _ = monoquant.quantize(MODEL, **kw)
            a, b = os.path.join(TMP, f"py_{tag}.{ext}"), os.path.join(TMP, f"cli_{tag}.{ext}")
            monoquant.save(q, a)
            mq("quantize", "--format", "native", src, "-o", b, "-q", *cli)
            assert filecmp.cmp(a, b, shallow=False), f"{tag} .{ext}: files differ"


@case
def save_refuses_to_replace_and_load_rebuilds():
    q, _ = monoquant.quantize(MODEL, bits=8)
    path = os.path.join(TMP, "saved8.safetensors")
    monoquant.save(q, path)
    raises(FileExistsError, lambda: monoquant.save(q, path), "overwrite=True")
    monoquant.save(q, path, overwrite=True)
    raises(TypeError, lambda: monoquant.save(MODEL, path), "not a model from monoquant")
    fresh = Small().eval()
    snap = snapshot(fresh)
    loaded = monoquant.load(path, fresh)
    assert same_state(fresh, snap), "load changed the skeleton"
    with torch.no_grad():
        assert torch.equal(loaded(X), q(X)), "load gives other logits"
    raises(ValueError, lambda: monoquant.load(path, nn.Sequential(nn.Linear(3, 3))),
           "does not match")
    # the rebuilt model saves the same file again
    again = os.path.join(TMP, "saved8_again.safetensors")
    monoquant.save(loaded, again)
    assert filecmp.cmp(path, again, shallow=False)


@case
def info_validate_compare_dequantize():
    q, _ = monoquant.quantize(MODEL, bits=8)
    path = os.path.join(TMP, "iv.safetensors")
    monoquant.save(q, path)
    inf = monoquant.info(path)
    assert inf["quantized"] and inf["format"] == "safetensors"
    assert {t["name"] for t in inf["logical"]} == set(MODEL.state_dict())
    assert monoquant.validate(path)["quantized"] == 3
    src = os.path.join(TMP, "small.safetensors")
    cmp = monoquant.compare(src, path)
    assert cmp["fc1.weight"]["sqnr_db"] > 35 and cmp["fc1.bias"]["max_abs"] == 0
    deq = monoquant.dequantize(path)
    assert deq["fc1.weight"].dtype == torch.float32 and deq["fc1.weight"].shape == (64, 256)
    out = monoquant.dequantize(path, os.path.join(TMP, "iv.dq.safetensors"))
    assert monoquant.info(out)["quantized"] is False
    corrupt = os.path.join(TMP, "corrupt.safetensors")
    open(corrupt, "wb").write(open(path, "rb").read()[:100])
    try:
        monoquant.validate(corrupt)
        raise AssertionError("no error")
    except monoquant.MonoquantError as e:
        assert "corrupt.safetensors" in e.message


@case
def state_dict_input():
    sd = MODEL.state_dict()
    snap = {k: v.clone() for k, v in sd.items()}
    out, rep = monoquant.quantize(sd, bits=4, default_skip=False)
    assert all(torch.equal(sd[k], snap[k]) for k in sd)
    assert out["fc1.weight_packed"].dtype == torch.int32 and "fc1.weight_scale" in out
    assert "fc1.bias" in out and len(rep.quantized) == 3


@case
def multihead_attention():
    torch.manual_seed(1)
    for batch_first in (False, True):
        mha = nn.MultiheadAttention(64, 4, batch_first=batch_first).eval()
        wrap = nn.Sequential()
        wrap.add_module("attn", mha)
        q, rep = monoquant.quantize(wrap, bits=8, activations="none")
        assert "attn.in_proj_weight" in rep.quantized, rep.skipped
        assert isinstance(q.attn, monoquant.nn.QuantizedMultiheadAttention)
        x = torch.randn(3, 5, 64) if batch_first else torch.randn(5, 3, 64)
        mask = torch.ones(5, 5, dtype=torch.bool).triu(1)
        kpm = torch.zeros(3, 5, dtype=torch.bool)
        kpm[1, 3:] = True
        with torch.no_grad():
            for kw in ({}, {"attn_mask": mask}, {"key_padding_mask": kpm},
                       {"need_weights": False}):
                r_out, r_w = mha(x, x, x, **kw)
                g_out, g_w = q.attn(x, x, x, **kw)
                assert torch.allclose(r_out, g_out, atol=0.02), (kw, (r_out - g_out).abs().max())
                assert (r_w is None) == (g_w is None)
                if r_w is not None:
                    assert torch.allclose(r_w, g_w, atol=0.01)
            y = torch.randn(3, 7, 64) if batch_first else torch.randn(7, 3, 64)  # cross
            assert torch.allclose(mha(x, y, y)[0], q.attn(x, y, y)[0], atol=0.02)


@case
def multihead_attention_variants():
    """Separate q/k/v projection weights (kdim/vdim), bias_k/bias_v and add_zero_attn: every
    projection quantized and run on the kernels, outputs within the int8 bound of the test
    above; each feature changes the output by more than that bound, so none goes unnoticed."""
    torch.manual_seed(2)
    for kw in ({"kdim": 32, "vdim": 48}, {"add_bias_kv": True}, {"add_zero_attn": True},
               {"kdim": 32, "vdim": 48, "add_bias_kv": True, "add_zero_attn": True},
               {"kdim": 32, "vdim": 48, "add_bias_kv": True, "bias": False}):
        for batch_first in (False, True):
            mha = nn.MultiheadAttention(64, 4, batch_first=batch_first, **kw).eval()
            if kw.get("add_bias_kv"):
                with torch.no_grad():  # a visible extra key and value
                    mha.bias_k.normal_(0, 2)
                    mha.bias_v.normal_(0, 2)
            wrap = nn.Sequential()
            wrap.add_module("attn", mha)
            for act in ("none", "dynamic"):
                q, rep = monoquant.quantize(wrap, bits=8, activations=act)
                want = ["attn.in_proj_weight"] if "kdim" not in kw else \
                    ["attn.q_proj_weight", "attn.k_proj_weight", "attn.v_proj_weight"]
                assert rep.quantized == want + ["attn.out_proj.weight"], rep.quantized
                assert isinstance(q.attn, monoquant.nn.QuantizedMultiheadAttention)
                kd, vd = kw.get("kdim", 64), kw.get("vdim", 64)
                shape = (lambda n, d: (3, n, d)) if batch_first else (lambda n, d: (n, 3, d))
                x, k, v = torch.randn(shape(5, 64)), torch.randn(shape(7, kd)), \
                    torch.randn(shape(7, vd))
                mask = torch.ones(5, 7, dtype=torch.bool).triu(1)
                kpm = torch.zeros(3, 7, dtype=torch.bool)
                kpm[1, 4:] = True
                unb = [t[0] if batch_first else t[:, 0] for t in (x, k, v)]
                with torch.no_grad():
                    for args, a in [((x, k, v), {}), ((x, k, v), {"attn_mask": mask}),
                                    ((x, k, v), {"key_padding_mask": kpm}),
                                    ((x, k, v), {"attn_mask": mask, "key_padding_mask": kpm,
                                                 "average_attn_weights": False}),
                                    ((x, k, v), {"need_weights": False}), (unb, {})]:
                        r_out, r_w = mha(*args, **a)
                        g_out, g_w = q.attn(*args, **a)
                        # the bound of the test above (weight-only); dynamic int8 inputs add
                        # their own rounding
                        tol = 0.02 if act == "none" else 0.04
                        assert torch.allclose(r_out, g_out, atol=tol), \
                            (kw, act, a, (r_out - g_out).abs().max())
                        assert (r_w is None) == (g_w is None)
                        if r_w is not None:
                            assert r_w.shape == g_w.shape and torch.allclose(r_w, g_w, atol=0.01)
                    # the bound sees each feature: without it the output is off by more
                    if kw.get("add_bias_kv") or kw.get("add_zero_attn"):
                        saved = q.attn.bias_k, q.attn.bias_v, q.attn.add_zero_attn
                        q.attn.bias_k = q.attn.bias_v = None
                        q.attn.add_zero_attn = False
                        err = (mha(x, k, v)[0] - q.attn(x, k, v)[0]).abs().max()
                        assert err > 0.05, (kw, err)  # above both bounds
                        q.attn.bias_k, q.attn.bias_v, q.attn.add_zero_attn = saved
            # saved and loaded back: the same outputs
            path = os.path.join(TMP, "mha_variant.safetensors")
            monoquant.save(q, path, overwrite=True)
            fresh = nn.Sequential()
            fresh.add_module("attn", nn.MultiheadAttention(64, 4, batch_first=batch_first, **kw))
            loaded = monoquant.load(path, fresh)
            with torch.no_grad():
                assert torch.equal(loaded.attn(x, k, v)[0], q.attn(x, k, v)[0]), kw
    # a projection kept float (skip) runs as it is, beside the quantized ones
    mha = nn.MultiheadAttention(64, 4).eval()
    wrap = nn.Sequential()
    wrap.add_module("attn", mha)
    q, rep = monoquant.quantize(wrap, bits=8, skip=["attn.in_proj_weight"])
    assert rep.quantized == ["attn.out_proj.weight"], rep.quantized
    x = torch.randn(5, 3, 64)
    with torch.no_grad():
        assert torch.allclose(mha(x, x, x)[0], q.attn(x, x, x)[0], atol=0.02)


@case
def calibration_static_and_merge():
    data = [torch.randn(4, 4, 8, 8) for _ in range(6)]
    whole = monoquant.calibrate(MODEL, data)
    a = monoquant.calibrate(MODEL, data[:3])
    b = monoquant.calibrate(MODEL, data[3:])
    a.merge(b)
    pw, pa = os.path.join(TMP, "whole.stats"), os.path.join(TMP, "merged.stats")
    whole.save(pw + ".safetensors")
    a.save(pa + ".safetensors")
    assert filecmp.cmp(pw + ".safetensors", pa + ".safetensors", shallow=False), \
        "merged statistics differ from one run over all batches"
    assert whole.layers == {"conv": 6 * 4 * 8 * 8, "fc1": 24, "fc2": 24}, whole.layers
    # map/reduce: statistics files of separate runs, read back and merged
    for hist in (False, True):
        kw = {"observer": "histogram"} if hist else {"hessian": True}
        parts = []
        for i, chunk in enumerate((data[:2], data[2:5], data[5:])):
            parts.append(os.path.join(TMP, f"part{i}.{hist}.safetensors"))
            monoquant.calibrate(MODEL, chunk, **kw).save(parts[-1])
        merged = monoquant.Stats.load(parts[0])
        for p in parts[1:]:
            merged.merge(monoquant.Stats.load(p))
        mpath = os.path.join(TMP, f"merged_files.{hist}.safetensors")
        merged.save(mpath)
        # the CLI's reduce step writes the same file
        cpath = os.path.join(TMP, f"merged_cli.{hist}.safetensors")
        mq("calibrate", "--merge", *parts, "-o", cpath, "-q")
        assert filecmp.cmp(mpath, cpath, shallow=False), "calibrate --merge differs"
        rc, _, err = mq("calibrate", "--merge", parts[0], "-o", cpath, check_rc=None)
        assert rc == 2 and "two or more" in err, (rc, err)
        rc, _, err = mq("calibrate", "--merge", parts[0], parts[1], "-o", parts[1], "-f",
                        check_rc=None)
        assert rc != 0 and "input" in err, (rc, err)
        wpath = os.path.join(TMP, f"whole.{hist}.safetensors")
        monoquant.calibrate(MODEL, data, **kw).save(wpath)
        import mqlib
        m, w = mqlib.read(mpath)[0], mqlib.read(wpath)[0]
        assert m.keys() == w.keys(), (sorted(m), sorted(w))
        for k in w:
            if k.endswith(("mean_sq", "hessian")):
                assert torch.allclose(m[k], w[k], rtol=1e-5, atol=1e-7), k
            elif not hist or k.endswith(("max_abs", ".count", "observer.batches")):
                # histograms of different ranges merge approximately (docs/CALIBRATION.md)
                assert torch.equal(m[k], w[k]), k
    q, rep = monoquant.quantize(MODEL, bits=8, calibration_data=data)
    assert q.fc1.act == 2 and rep["fc1.weight"].has_input_params
    with torch.no_grad():
        err = (q(X) - MODEL(X)).norm() / MODEL(X).norm()
    assert err < 0.05, err
    # the CLI quantizing with the saved statistics gives the same file
    src = os.path.join(TMP, "small.safetensors")
    stats = os.path.join(TMP, "static.stats.safetensors")
    monoquant.calibrate(MODEL, data).save(stats)
    q2, _ = monoquant.quantize(MODEL, bits=8, calibration_stats=stats)
    a, b = os.path.join(TMP, "py_static.safetensors"), os.path.join(TMP, "cli_static.safetensors")
    monoquant.save(q2, a)
    mq("quantize", "--format", "native", src, "-o", b, "-q", "--calibration", stats)
    assert filecmp.cmp(a, b, shallow=False)
    raises(ValueError, lambda: monoquant.calibrate(MODEL, []), "no inputs")
    raises(TypeError, lambda: monoquant.calibrate(MODEL, [X.double().to(torch.int32)]), "dtype")


@case
def gptq_act_order_same_bytes_as_cli():
    """act_order=True reaches the library: the CLI's --act-order bytes, not the plain ones."""
    import mqlib
    src = os.path.join(TMP, "small_ao.safetensors")
    mqlib.write(src, MODEL.state_dict())
    stats = os.path.join(TMP, "gptq.stats.safetensors")
    monoquant.calibrate(MODEL, [X[:4], X[4:]], hessian=True).save(stats)
    files = {}
    for ao in (False, True):
        q, _ = monoquant.quantize(MODEL, config=monoquant.QuantizationConfig(
            bits=4, method="gptq", calibration_stats=stats, act_order=ao))
        files[ao] = os.path.join(TMP, f"py_ao{int(ao)}.safetensors")
        monoquant.save(q, files[ao])
        cli = os.path.join(TMP, f"cli_ao{int(ao)}.safetensors")
        mq("quantize", "--format", "native", src, "-o", cli, "-q", "--bits", "4", "--search",
           "gptq", "--calibration", stats, *(["--act-order"] if ao else []))
        assert filecmp.cmp(files[ao], cli, shallow=False), ao
    assert not filecmp.cmp(files[False], files[True], shallow=False)


@case
def inplace_replaces_layers():
    m = Small().eval()
    with torch.no_grad():
        ref = m(X)
    q, _ = monoquant.quantize(m, bits=8, inplace=True)
    assert q is m and isinstance(m.fc1, monoquant.nn.QuantizedLinear)
    with torch.no_grad():
        assert (m(X) - ref).norm() / ref.norm() < 0.02


@case
def aliases_and_config():
    q, rep = monoquant.dynamic_quantize(MODEL, dtype=torch.qint8)
    assert q.fc1.act == 1
    cfg = monoquant.QuantizationConfig(bits=4, group_size=64, default_skip=False)
    q, rep = monoquant.quantize(MODEL, config=cfg)
    assert rep["fc1.weight"].format == "int4" and rep["fc1.weight"].group_size == 64
    q, rep = monoquant.quantize(MODEL, bits=16)
    assert q.fc1.qtype == 5 and rep["fc1.weight"].action == "cast"
    q, rep = monoquant.quantize(MODEL, layers={"fc2.*": "none"}, layer_types=(nn.Linear,))
    assert isinstance(q.fc2, nn.Linear) and isinstance(q.conv, nn.Conv2d)
    assert "conv.weight" in rep.skipped


finish()
