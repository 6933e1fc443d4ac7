"""Format layer: weight files on disk -> ``dict[str, np.ndarray]`` under the checkpoint's own names.
``safetensors`` reads safetensors files (single or sharded); ``onnx`` reads the initializers of an exported
ONNX model and names them from its graph (imported when an ONNX file is read)."""

from .safetensors import (SAFETENSORS_INDEX, SAFETENSORS_SINGLE, SUPPORTED_DTYPES, bf16_bits_to_float32,
                          load_safetensors, load_sharded_safetensors, load_weight_files, read_header, read_shard_index,
                          read_weight_map)

ONNX_SINGLE = "model.onnx"  # an exported model's file in a folder or Hub repo
