"""Format layer for ONNX: an exported model's weights as ``{name: np.ndarray}``, read from its initializers
without running the graph (the ``onnx`` package parses the file; nothing else of it is used).

Exporters keep few of the state dict's names: Linear weights become anonymous (``val_42``,
``onnx::MatMul_123``) and are stored transposed for ``MatMul``, initializers with equal values are merged into
one (every all-zero bias becomes the same tensor), and a wrapper module adds its own prefix. So every weight is
named where it is used: by the module that uses it, read from the node (the dynamo exporter's
``pkg.torch.onnx.name_scopes`` metadata, or a TorchScript-style node name such as
``/model/encoder/layers.0/ff/ff.0/MatMul``), and by the input it feeds (``MatMul`` / ``Gemm`` B: weight, with
``transB`` telling the layout, as in onnxruntime's ``FusedMatMul`` / ``FusedGemm``; the ``Add`` or ``Gemm`` C
after one: bias; ``BatchNormalization`` / ``LayerNormalization`` / onnxruntime's ``SkipLayerNormalization``
inputs: weight, bias, running mean and variance). A use the graph does not name
(metadata stripped, node names rewritten by an optimiser) is left for the model family to name from the
graph's structure (``WeightUse``). Values are returned bit for bit: a transposed weight is transposed back.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, MissingFileError
from ..files import open_regular

ONNX_EXTRA = "rustml-nb[onnx]"
MATMULS = ("MatMul", "Gemm", "FusedMatMul", "FusedGemm")  # the ops a Linear becomes
_FIXED_INPUTS = {  # ops whose inputs say what they are
    "BatchNormalization": {1: "weight", 2: "bias", 3: "running_mean", 4: "running_var"},
    "LayerNormalization": {1: "weight", 2: "bias"},
    # onnxruntime's residual add + LayerNorm, with the bias of the Linear before it moved in as input 4
    "SkipLayerNormalization": {2: "weight", 3: "bias", 4: "linear_bias"},
    # onnxruntime's bias add + GELU after a MatMul: the bias is the Linear's
    "BiasGelu": {1: "linear_bias"},
}
_ANONYMOUS = re.compile(r"(onnx::|val_|_val_|/)|^[^.]*$")  # names no state dict holds


def import_onnx():
    try:
        import onnx
    except ImportError:
        raise MissingFileError(f"reading .onnx files needs the onnx package: pip install '{ONNX_EXTRA}'") from None
    return onnx


@dataclasses.dataclass(frozen=True)
class WeightUse:
    """One floating-point constant feeding one node input. ``array`` is in the layout a state dict stores
    (a Linear weight ``[out, in]``); ``role`` is what the input is (``weight``, ``bias``, ``running_mean``,
    ...; None when the op does not say) and ``module`` the module path the graph gives the node (None when
    it gives none)."""

    node: object  # onnx.NodeProto
    index: int
    source: str  # the initializer (or Constant node output) the value comes from
    array: np.ndarray
    role: str | None
    module: str | None


class OnnxGraph:
    """An ONNX model's graph, indexed: initializers (external data read from the file's folder), the node
    producing and the nodes consuming every value."""

    def __init__(self, path):
        self.path = Path(path)
        onnx = import_onnx()
        from google.protobuf.message import DecodeError

        with os.fdopen(open_regular(self.path, "ONNX file"), "rb") as file:  # a FIFO or device is refused
            data = file.read()
        try:
            model = onnx.load_model_from_string(data)  # external data is read by initializer(), never here
        except (DecodeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{self.path} is not an ONNX model ({type(error).__name__}: {error})"[:400]) from None
        if not model.graph.node:
            raise CheckpointError(f"{self.path} is not an ONNX model: its graph has no nodes")
        self.model, self.graph, self.onnx = model, model.graph, onnx
        self.external_files = sorted({entry.value for tensor in self.graph.initializer for entry in tensor.external_data
                                      if entry.key == "location"})
        self._arrays: dict[str, np.ndarray] = {}
        self._uses: list[WeightUse] | None = None
        self.initializers = {tensor.name: tensor for tensor in self.graph.initializer}
        self.producer = {}
        self.consumers: dict[str, list] = {}
        for node in self.graph.node:
            for output in node.output:
                self.producer[output] = node
            for index, value in enumerate(node.input):
                self.consumers.setdefault(value, []).append((node, index))
        self.inputs = [value for value in self.graph.input if value.name not in self.initializers]
        self.metadata = {entry.key: entry.value for entry in model.metadata_props}

    def from_input(self) -> set[str]:
        """The values that depend on the graph's inputs (not only on constants and shapes)."""
        found = {value.name for value in self.inputs}
        for node in self.graph.node:
            if node.op_type != "Shape" and any(value in found for value in node.input):
                found.update(node.output)
        return found

    def describe(self) -> str:
        """A one-line summary for error messages: inputs, outputs, op types, initializers."""
        def shape(value):
            return [d.dim_value or d.dim_param or "?" for d in value.type.tensor_type.shape.dim]

        ops = sorted({node.op_type for node in self.graph.node})
        return (f"inputs {[(v.name, shape(v)) for v in self.inputs]}, outputs "
                f"{[(v.name, shape(v)) for v in self.graph.output]}, {len(self.graph.node)} nodes of "
                f"{len(ops)} op types ({', '.join(ops[:12])}{', ...' if len(ops) > 12 else ''}), "
                f"{len(self.initializers)} initializers")[:600]

    def initializer(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            tensor = self.initializers[name]
            if tensor.external_data:
                tensor = self._with_external_data(name, tensor)
            try:
                array = self.onnx.numpy_helper.to_array(tensor)
            except (ValueError, OSError, TypeError) as error:
                raise CheckpointError(f"{self.path}: tensor {name!r} cannot be read ({error})"[:400]) from None
            self._arrays[name] = array
        return self._arrays[name]

    def _with_external_data(self, name: str, tensor):
        """The tensor with its bytes read from the file beside the model that holds them. Read here rather
        than by onnx, which refuses symbolic links, and the Hub's cache links every file of a snapshot."""
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location, folder = entries.get("location", ""), Path(os.path.normpath(self.path.parent))
        path = Path(os.path.normpath(folder / location))
        if not location or os.path.isabs(location) or folder not in path.parents:  # checked by name, not target
            raise CheckpointError(f"{self.path}: tensor {name!r} points outside the model's folder ({location!r})")
        if not path.exists():
            raise MissingFileError(f"{self.path}: tensor {name!r} is stored in {location}, which is not beside "
                                   f"the model ({path})")
        try:
            offset, length = int(entries.get("offset", 0)), int(entries["length"]) if "length" in entries else -1
        except ValueError:
            raise CheckpointError(f"{self.path}: tensor {name!r} has an unreadable byte range {entries}"[:400]) from None
        try:
            with os.fdopen(open_regular(path, f"the data of tensor {name!r}"), "rb") as file:
                file.seek(offset)
                data = file.read(length)
        except OSError as error:
            raise CheckpointError(f"{self.path}: tensor {name!r} cannot be read from {location} ({error})"[:400]) \
                from None
        if length >= 0 and len(data) != length:
            raise CheckpointError(f"{self.path}: tensor {name!r} needs {length} bytes at {offset} of {location}, "
                                  f"the file holds {len(data)} there")
        inline = self.onnx.TensorProto()
        inline.CopyFrom(tensor)
        del inline.external_data[:]
        inline.data_location = self.onnx.TensorProto.DEFAULT
        inline.raw_data = data
        return inline

    def constant(self, value: str):
        """(array, source name) when ``value`` is a constant: an initializer, a Constant node's output, either
        through Identity or a 2-d Transpose (undone exactly), or a shape assembled from constants by Concat,
        Unsqueeze and Squeeze. Else None. Nothing else is evaluated: the graph is never run."""
        transposed = False
        while value not in self.initializers:
            node = self.producer.get(value)
            if node is None:
                return None
            if node.op_type == "Identity":
                value = node.input[0]
            elif node.op_type == "Transpose" and list(self.attribute(node, "perm", [])) == [1, 0]:
                value, transposed = node.input[0], not transposed
            elif node.op_type == "Concat" and not transposed:  # a shape assembled from constants
                parts = [self.constant(part) for part in node.input]
                if any(part is None for part in parts):
                    return None
                return np.concatenate([part[0] for part in parts], axis=self.attribute(node, "axis", 0)), value
            elif node.op_type in ("Unsqueeze", "Squeeze") and not transposed:  # a size turned into a 1-element shape
                data = self.constant(node.input[0])
                axes = self.constant(node.input[1]) if len(node.input) > 1 else None
                axes = list(axes[0].reshape(-1)) if axes is not None else self.attribute(node, "axes", None)
                if data is None or axes is None:
                    return None
                array = data[0]
                if node.op_type == "Squeeze":
                    return np.squeeze(array, axis=tuple(int(axis) for axis in axes)), value
                for axis in sorted(int(axis) % (array.ndim + len(axes)) for axis in axes):
                    array = np.expand_dims(array, axis)
                return array, value
            elif node.op_type == "Constant":
                array = self._constant_node(node)
                if array is None:
                    return None
                return (array.T if transposed else array), value
            else:
                return None
        array = self.initializer(value)
        return (array.T if transposed else array), value

    def _constant_node(self, node):
        for attribute in node.attribute:
            if attribute.name == "value":
                return self.onnx.numpy_helper.to_array(attribute.t)
            if attribute.name in ("value_int", "value_ints"):
                return np.array(self.onnx.helper.get_attribute_value(attribute), np.int64)
            if attribute.name in ("value_float", "value_floats"):
                return np.array(self.onnx.helper.get_attribute_value(attribute), np.float32)
        return None

    def attribute(self, node, name, default=None):
        attribute = next((a for a in node.attribute if a.name == name), None)
        return default if attribute is None else self.onnx.helper.get_attribute_value(attribute)

    def module_of(self, node) -> str | None:
        """The module path the graph records for a node: the dynamo exporter's name scopes, or a
        TorchScript-style node name (``/model/encoder/layers.0/ff/ff.0/MatMul`` -> ``model.encoder.layers.0.ff.0``)."""
        for entry in node.metadata_props:
            if entry.key == "pkg.torch.onnx.name_scopes":
                try:
                    scopes = ast.literal_eval(entry.value)
                except (ValueError, SyntaxError):
                    return None
                return scopes[-2] if len(scopes) >= 2 and scopes[-2] else None
        if not node.name.startswith("/"):
            return None
        parts = node.name.split("/")[1:]
        while parts and not parts[-1][:1].islower():  # the op's own name: MatMul, Add_1, MatMulAddFusion
            parts.pop()
        path: list[str] = []
        for part in parts:  # a Sequential is a scope and so is each child: ff/ff.0 is ff.0
            if path and part.startswith(path[-1] + "."):
                path.pop()
            path.append(part)
        return ".".join(path) or None

    def role_of(self, node, index) -> tuple[str, bool] | None:
        """(what a constant at this input is, whether it is stored ``[in, out]``), or None."""
        op = node.op_type
        if op in _FIXED_INPUTS:
            role = _FIXED_INPUTS[op].get(index)
            return (role, False) if role else None
        if op == "MatMul" and index == 1:
            return "weight", True
        if op == "FusedMatMul" and index == 1:  # onnxruntime's MatMul with transposes and a scale folded in
            if self.attribute(node, "alpha", 1.0) != 1.0 or self.attribute(node, "transBatchB", 0):
                return None  # a scaled product (attention scores), or B's batch axes moved: not a Linear
            return "weight", not self.attribute(node, "transB", 0)
        if op in ("Gemm", "FusedGemm"):  # FusedGemm: onnxruntime's Gemm with the activation after it
            if self.attribute(node, "alpha", 1.0) != 1.0 or self.attribute(node, "beta", 1.0) != 1.0:
                return None  # a scaled product: its constants are not the module's weights
            if index == 1:
                return "weight", not self.attribute(node, "transB", 0)
            if index == 2:
                return "bias", False
        if op == "Add" and len(node.input) == 2:
            other = self.producer.get(node.input[1 - index])
            if other is not None and other.op_type in MATMULS:
                return "bias", False
        return None

    def weight_uses(self) -> list[WeightUse]:
        """Every floating-point constant feeding a node, with what the graph says about it (worked out once:
        naming, structure and config recovery all read it)."""
        if self._uses is None:
            self._uses = self._find_weight_uses()
        return self._uses

    def _find_weight_uses(self) -> list[WeightUse]:
        uses = []
        for node in self.graph.node:
            if node.op_type in ("Identity", "Transpose", "Constant"):
                continue
            for index, value in enumerate(node.input):
                found = self.constant(value) if value else None
                if found is None or found[0].dtype.kind != "f":
                    continue
                array, source = found
                role = self.role_of(node, index)
                if role is not None and role[1]:
                    if array.ndim != 2:
                        role = None  # a batched product with a constant: not a Linear
                    else:
                        array = array.T
                producer = self.producer.get(value)
                if producer is not None and producer.op_type == "Identity" and not _ANONYMOUS.search(value):
                    source = value  # the TorchScript exporter's name for one use of a shared initializer
                uses.append(WeightUse(node, index, source, array, role and role[0], self.module_of(node)))
        return uses


def named_weights(uses: list[WeightUse]) -> tuple[dict[str, np.ndarray], list[WeightUse]]:
    """The weights the graph names (``module.role``, or a value's own state-dict-like name when no use names
    it by role: an initializer merged from several equal ones carries one of their names, which is wrong for
    the others), and the uses left unnamed. Two different arrays under one name is an error."""
    by_role = {use.source for use in uses if use.module and use.role}
    named: dict[str, np.ndarray] = {}
    unnamed = []
    for use in uses:
        if use.role == "linear_bias":  # belongs to another node's module: named with that Linear
            unnamed.append(use)
            continue
        if use.module and use.role:
            name = f"{use.module}.{use.role}"
        elif not _ANONYMOUS.search(use.source) and use.source not in by_role:
            name = use.source  # e.g. a positional table, sliced before it is added: no module uses it by role
        else:
            unnamed.append(use)
            continue
        if name in named and not (named[name].shape == use.array.shape and np.array_equal(named[name], use.array)):
            raise CheckpointError(f"two different tensors are used as {name!r} in the ONNX graph")
        named[name] = use.array
    return named, unnamed


def unfold_slices(graph: OnnxGraph) -> dict[str, list[int]]:
    """Tensors sliced along one negative axis more than once, with the slices' starts: how the TorchScript
    exporter writes ``Tensor.unfold(dimension < 0)``."""
    slices: dict[str, list[int]] = {}
    for node in graph.graph.node:
        if node.op_type == "Slice" and len(node.input) > 3:
            axes, starts = graph.constant(node.input[3]), graph.constant(node.input[1])
            if axes is not None and axes[0].size == 1 and int(axes[0].reshape(-1)[0]) < 0 \
                    and starts is not None and starts[0].size == 1:
                slices.setdefault(node.input[0], []).append(int(starts[0].reshape(-1)[0]))
    return {value: starts for value, starts in slices.items() if len(starts) > 1}


def has_legacy_unfold(graph: OnnxGraph) -> bool:
    """Whether the graph comes from torch's TorchScript exporter (no dynamo metadata) and unfolds a tensor
    along a negative axis: that exporter gets the output's axes of ``Tensor.unfold(dimension < 0)`` wrong."""
    if graph.model.producer_name != "pytorch" or any(
            entry.key.startswith("pkg.torch.onnx") for node in graph.graph.node for entry in node.metadata_props):
        return False
    return bool(unfold_slices(graph))
