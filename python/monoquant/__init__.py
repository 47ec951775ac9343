"""monoquant: quantize PyTorch models with the monoquant library and run them on its kernels.

    import monoquant
    qmodel, report = monoquant.quantize(model, bits=8)   # the original is left untouched
    y = qmodel(x)                                          # Quantized* layers, C kernels
    monoquant.save(qmodel, "model.int8.safetensors")       # the CLI's bytes

See docs/PYTHON.md."""
from ._lib import (MonoquantError, VERSION as library_version, LIB_PATH as library_path,
                   set_num_threads, get_num_threads)
from .core import (quantize, dynamic_quantize, static_quantize, QuantizationConfig, Report,
                   LayerReport)
from .io import Checkpoint, save, load, info, validate, compare, dequantize
from .calibrate import Stats, calibrate
from . import nn

__version__ = "0.2.0"
__all__ = ["quantize", "dynamic_quantize", "static_quantize", "QuantizationConfig", "Report",
           "LayerReport", "Checkpoint", "save", "load", "info", "validate", "compare",
           "dequantize", "Stats", "calibrate", "nn", "MonoquantError", "set_num_threads",
           "get_num_threads", "library_version", "library_path"]
