#!/usr/bin/env python3
"""Records the inputs of the Linear and Conv layers of any torch.nn.Module, for
`monoquant calibrate`. Needs only torch and the standard library.

    from record_activations import ActivationRecorder
    rec = ActivationRecorder(model, max_rows=4096)   # rows kept per layer
    with rec:                                         # forward pre-hooks on while inside
        for batch in my_batches:
            model(batch)
    rec.save("acts.safetensors")          # one file: every kept row of every layer
    rec.save_batches("acts/")             # or one file per forward pass (batch order kept)

Tensors are named by the layer's prefix in model.state_dict() ("blocks.0.mlp.fc"), with shape
[rows, in_features] for Linear (leading dims flattened) and [N, C, H, W] for Conv. Rows beyond
max_rows (images for Conv) are dropped, first come first kept.
"""
import argparse
import json
import os
import struct
import sys

import torch
from torch import nn

DEFAULT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.float64: "F64"}


def save_safetensors(tensors, path, metadata=None):
    """Writes {name: tensor} as safetensors: u64 little-endian header length, JSON header
    padded with spaces to a multiple of 8, then the raw little-endian bytes in order."""
    header = {"__metadata__": {"format": "pt", **(metadata or {})}}
    blobs, offset = [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        if t.dtype not in _DTYPES:
            t = t.float()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: take the raw 16-bit words
            raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


class ActivationRecorder:
    """Forward pre-hooks on every module of `layer_types`; keeps at most `max_rows` rows per
    layer (Linear: rows of the flattened input; Conv: images)."""

    def __init__(self, model, max_rows=4096, layer_types=DEFAULT_TYPES, dtype=torch.float32):
        self.model = model
        self.max_rows = int(max_rows)
        self.dtype = dtype
        self.layers = {name: m for name, m in model.named_modules()
                       if isinstance(m, layer_types) and name}
        self.kept = {name: [] for name in self.layers}   # list of tensors per layer
        self.rows = {name: 0 for name in self.layers}
        self.batches = []                                # [{name: tensor}] per forward pass
        self._current = None
        self._handles = []

    def _hook(self, name):
        def hook(module, inputs):
            x = inputs[0].detach()
            if isinstance(module, nn.Linear):
                x = x.reshape(-1, x.shape[-1])
            room = self.max_rows - self.rows[name]
            if room <= 0:
                return
            x = x[:room].to(self.dtype).cpu().clone()
            self.kept[name].append(x)
            self.rows[name] += x.shape[0]
            if self._current is not None:
                prev = self._current.get(name)
                self._current[name] = x if prev is None else torch.cat([prev, x])
        return hook

    def _top_hook(self, module, inputs):
        self._current = {}
        self.batches.append(self._current)

    def __enter__(self):
        self._handles.append(self.model.register_forward_pre_hook(self._top_hook))
        for name, m in self.layers.items():
            self._handles.append(m.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        self._current = None
        return False

    def tensors(self):
        return {name: torch.cat(v) for name, v in self.kept.items() if v}

    def save(self, path):
        """Everything kept, one tensor per layer, in one file."""
        save_safetensors(self.tensors(), path, {"monoquant.activations": "1"})

    def save_batches(self, folder):
        """One file per forward pass (batch_00000.safetensors, ...): each is one batch for the
        observers, which matters for moving averages."""
        os.makedirs(folder, exist_ok=True)
        n = 0
        for i, b in enumerate(self.batches):
            if b:
                save_safetensors(b, os.path.join(folder, f"batch_{i:05d}.safetensors"),
                                 {"monoquant.activations": "1"})
                n += 1
        return n


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--selftest", action="store_true", help="record a tiny model and check the file")
    a = p.parse_args()
    if not a.selftest:
        p.print_help()
        return 0
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
    rec = ActivationRecorder(model, max_rows=5)
    with rec:
        for _ in range(3):
            model(torch.randn(2, 1, 4, 4))
    t = rec.tensors()
    assert t["0"].shape == (5, 1, 4, 4) and t["2"].shape == (5, 8), {k: v.shape for k, v in t.items()}
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
