"""Orchestration for ONNX exports of PatchTST: the graph's weights under transformers' checkpoint names, and
the config when no ``config.json`` comes with the file.

The format layer (``formats.onnx``) names what the graph names. Here a wrapper module's prefix is dropped
(``model.model.encoder...`` from ``torch.onnx.export`` of a module holding the PatchTST model), and the
weights the graph leaves unnamed (metadata stripped, node names rewritten by onnxruntime's optimiser) are
named from the structure: Linear layers in data-flow order (how many Linear layers lie between the input
and each one, not the file's node order, which optimisers change), q, k and v told apart by which input of
the attention products their outputs reach, norms in the same order.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from ...errors import CheckpointError
from ...formats.onnx import MATMULS, OnnxGraph, WeightUse, named_weights, unfold_slices
from .mapping import RULES


@dataclasses.dataclass
class OnnxCheckpoint:
    """``tensors``: checkpoint name -> array (what model.safetensors would hold, less what inference never
    reads); ``named_by``: how each was named (by the ``graph``, the ``structure``, or folded by the exporter)."""

    tensors: dict[str, np.ndarray]
    named_by: dict[str, str]


def _strip_prefix(names) -> str:
    """The wrapper prefix in front of the checkpoint names: the shortest that lets the most names map."""
    counts: dict[str, int] = {}
    for name in names:
        parts = name.split(".")
        for cut in range(len(parts)):
            if RULES.our_name(".".join(parts[cut:])) is not None:
                prefix = ".".join(parts[:cut]) + ("." if cut else "")
                counts[prefix] = counts.get(prefix, 0) + 1
                break
    if not counts:
        return ""
    return max(counts, key=lambda prefix: (counts[prefix], -len(prefix)))


def checkpoint_from_graph(graph: OnnxGraph, head: str, config=None) -> OnnxCheckpoint:
    """The weights under checkpoint names: as the graph names them, and from the structure where it does not
    name every Linear layer (``head``: the model's head, see ``detection.HEADS``; ``config``, when known, says
    whether a lone embedding or projection is the per-channel kind)."""
    uses = graph.weight_uses()
    named, unnamed = named_weights(uses)
    prefix = _strip_prefix(named)
    tensors, named_by = {}, {}
    for name, array in named.items():
        ours = RULES.our_name(name[len(prefix):] if name.startswith(prefix) else name)
        if ours is None:
            continue
        key = RULES.hf_name(ours)  # one spelling (a task class's, "model."-prefixed), whichever the graph used
        tensors[key], named_by[key] = array, "graph"
    if any(use.role == "weight" for use in unnamed):
        names = " ".join(tensors)
        shared = (config.share_embedding if config is not None else not re.search(r"input_embedding\.\d+\.", names),
                  config.share_projection if config is not None else not re.search(r"head\.projections\.\d+\.", names))
        distribution = (config.distribution_output if config is not None and config.has_distribution_head
                        and head in ("prediction", "regression") else None)
        for ours, array in name_by_structure(graph, uses, head, *shared, distribution=distribution).items():
            key = RULES.hf_name(ours)
            if key in tensors:
                if not (tensors[key].shape == array.shape and np.array_equal(tensors[key], array)):
                    raise CheckpointError(f"{graph.path}: the graph's names and its structure disagree about {key!r}")
                continue
            tensors[key], named_by[key] = array, "structure"
    position_key, token_key = RULES.hf_name("positional_encoding"), RULES.hf_name("cls_token")
    if position_key not in tensors:  # folded into other constants by the exporter
        embedding = _by_depth(_linears(graph, uses))[:1]
        table, token = _positions(graph, embedding[0], embedding[0][0].weight.array.shape[0]) if embedding else (None, None)
        for key, array in ((position_key, table), (token_key, token)):
            if array is not None and key not in tensors:
                tensors[key], named_by[key] = array, (
                    "folded by the exporter (cls_token + position_enc[0] into one)" if token is not None else "structure")
    return OnnxCheckpoint(tensors, named_by)


# --------------------------------------------------------------------------------------------------
# Naming from the structure
# --------------------------------------------------------------------------------------------------
_PASS_THROUGH = ("Reshape", "Transpose", "Mul", "Div", "Cast", "Unsqueeze", "Squeeze", "Identity", "Add", "Slice",
                 "Expand", "Flatten")
_PRODUCTS = ("MatMul", "FusedMatMul")


@dataclasses.dataclass
class _Linear:
    node: object
    weight: WeightUse
    bias: WeightUse | None
    output: str  # after the bias
    depth: int = 0  # Linear layers on the longest path from the graph's input to this one


def _linears(graph: OnnxGraph, uses: list[WeightUse]) -> list[_Linear]:
    biases, linear_biases = {}, {}
    for use in uses:
        if use.role == "bias":
            biases[id(use.node)] = use
        elif use.role == "linear_bias":
            linear_biases[id(use.node)] = use
    found = []
    for use in uses:
        if use.role != "weight" or use.node.op_type not in MATMULS:
            continue
        node = use.node
        bias, output = None, node.output[0]
        if node.op_type in ("Gemm", "FusedGemm"):
            bias = biases.get(id(node))
        else:
            for consumer, _ in graph.consumers.get(output, []):
                if consumer.op_type == "Add" and id(consumer) in biases:
                    bias, output = biases[id(consumer)], consumer.output[0]
                elif id(consumer) in linear_biases:  # onnxruntime moved the bias into the op after the Linear
                    bias = linear_biases[id(consumer)]
        found.append(_Linear(node, use, bias, output))
    depth = _depths(graph, {id(linear.node) for linear in found})
    for linear in found:
        linear.depth = depth[id(linear.node)]
    return sorted(found, key=lambda linear: linear.depth)


def _depths(graph: OnnxGraph, linear_nodes: set[int]) -> dict[int, int]:
    """Every node's count of Linear layers on the longest path from the graph's input to it."""
    value_depth: dict[str, int] = {}
    node_depth = {}
    for node in graph.graph.node:  # ONNX keeps nodes in a topological order
        level = max((value_depth.get(value, 0) for value in node.input if value), default=0)
        node_depth[id(node)] = level
        for output in node.output:
            value_depth[output] = level + (id(node) in linear_nodes)
    return node_depth


def _forward_to(graph: OnnxGraph, value: str, stop, limit: int = 12, passing=_PASS_THROUGH):
    """Follow ``value`` through shape and scaling ops to the first node ``stop`` accepts: (node, input index)."""
    frontier = [value]
    for _ in range(limit):
        following = []
        for current in frontier:
            for consumer, index in graph.consumers.get(current, []):
                if stop(consumer, index):
                    return consumer, index
                if consumer.op_type in passing:
                    following.extend(consumer.output)
        frontier = following
    return None


def _comes_from_softmax(graph: OnnxGraph, value: str, limit: int = 6) -> bool:
    for _ in range(limit):
        node = graph.producer.get(value)
        if node is None:
            return False
        if node.op_type == "Softmax":
            return True
        value = node.input[0]
    return False


def _attention_roles(graph: OnnxGraph, group: list[_Linear]) -> list[_Linear]:
    """q, k, v of one attention block, from where their outputs go: q and k into the scores product (q as its
    first input), v into the product with the softmax."""
    def is_product(node, index):
        return node.op_type in _PRODUCTS and not any(graph.constant(value) for value in node.input)

    roles = {}
    for linear in group:
        reached = _forward_to(graph, linear.output, is_product)
        if reached is None:
            raise CheckpointError(f"{graph.path}: cannot follow an attention projection to its product")
        node, index = reached
        other = node.input[1 - index]
        if index == 1 and _comes_from_softmax(graph, other):
            roles["v_proj"] = linear
        else:
            roles["q_proj" if index == 0 else "k_proj"] = linear
    if sorted(roles) != ["k_proj", "q_proj", "v_proj"]:
        raise CheckpointError(f"{graph.path}: cannot tell q, k and v apart in an attention block")
    return [roles["q_proj"], roles["k_proj"], roles["v_proj"]]


def _concat_position(graph: OnnxGraph, linear: _Linear) -> int:
    reached = _forward_to(graph, linear.output, lambda node, index: node.op_type == "Concat")
    if reached is None:
        raise CheckpointError(f"{graph.path}: cannot tell which channel a per-channel Linear belongs to")
    return reached[1]


def _same(a: _Linear, b: _Linear) -> bool:
    return a.weight.source == b.weight.source or (a.weight.array.shape == b.weight.array.shape
                                                  and np.array_equal(a.weight.array, b.weight.array))


def _by_depth(linears: list[_Linear]) -> list[list[_Linear]]:
    groups: list[list[_Linear]] = []
    for linear in linears:
        if groups and groups[-1][0].depth == linear.depth:
            groups[-1].append(linear)
        else:
            groups.append([linear])
    return groups


def _assign(named: dict, name: str, linear: _Linear) -> None:
    named[f"{name}.weight"] = linear.weight.array
    if linear.bias is not None:
        named[f"{name}.bias"] = linear.bias.array


def _per_channel(graph: OnnxGraph, group: list[_Linear]) -> list[_Linear]:
    if len(group) == 1:
        return group  # a stack of one, which exporters drop
    ordered = sorted(group, key=lambda linear: _concat_position(graph, linear))
    if [_concat_position(graph, linear) for linear in ordered] != list(range(len(group))):
        raise CheckpointError(f"{graph.path}: the per-channel Linear layers do not stack in channel order")
    return ordered


def name_by_structure(graph: OnnxGraph, uses: list[WeightUse], head: str, share_embedding: bool = True,
                      share_projection: bool = True, distribution: str | None = None) -> dict[str, np.ndarray]:
    """Our names for the weights of a PatchTST graph, from its structure alone (``head``: the head the
    caller knows the model has, see ``detection.HEADS``; ``share_*``: whether a lone embedding or
    projection is the shared kind or one channel's; ``distribution``: the distribution of a head known to be
    a distribution head, whose parameters are told apart by the maps that follow their projections)."""
    linears = _linears(graph, uses)
    groups = _by_depth(linears)
    if not groups:
        raise CheckpointError(f"{graph.path}: no Linear layers (MatMul or Gemm with a constant weight) in the graph")
    named: dict[str, np.ndarray] = {}
    embedding = groups[0]
    if len(embedding) == 1 and share_embedding:
        _assign(named, "embedding", embedding[0])
    else:
        for channel, linear in enumerate(_per_channel(graph, embedding)):
            _assign(named, f"embedding.{channel}", linear)
    at, layer = 1, 0
    while at + 3 < len(groups) and len(groups[at]) == 3 and len(groups[at + 1]) == 1:
        prefix = f"encoder_layers.{layer}"
        q, k, v = _attention_roles(graph, groups[at])
        for projection, linear in zip(("q_proj", "k_proj", "v_proj", "out_proj"), (q, k, v, groups[at + 1][0])):
            _assign(named, f"{prefix}.attention.{projection}", linear)
        at += 2
        if (len(groups) > at + 3 and len(groups[at]) == 3
                and all(any(_same(a, b) for b in (q, k, v)) for a in groups[at])):
            at += 2  # attention across channels, with the same weights
        if len(groups) < at + 2 or len(groups[at]) != 1 or len(groups[at + 1]) != 1:
            raise CheckpointError(f"{graph.path}: encoder layer {layer} has no feed-forward pair after its attention")
        _assign(named, f"{prefix}.ff.linear1", groups[at][0])
        _assign(named, f"{prefix}.ff.linear2", groups[at + 1][0])
        at, layer = at + 2, layer + 1
    _name_norms(graph, uses, {id(linear.node) for linear in linears}, layer, named)
    heads = groups[at:]
    if head == "pretraining" and not heads:
        head = "none"  # a bare PatchTSTModel: its output has the same rank
    if head == "none":
        if heads:
            raise CheckpointError(f"{graph.path}: {len(heads)} Linear layers after the encoder of a model without a head")
        return named
    if len(heads) != 1:
        raise CheckpointError(f"{graph.path}: expected the head's Linear layers after the encoder, found "
                              f"{len(heads)} groups of them")
    group = heads[0]
    stacked = len(group) > 1 and all(_forward_to(graph, linear.output, lambda n, i: n.op_type == "Concat")
                                     for linear in group)
    if distribution is not None and share_projection:
        for index, linear in enumerate(_distribution_parameters(graph, group, distribution)):
            _assign(named, f"head.distribution.{index}", linear)
    elif distribution or (len(group) > 1 and not (head == "prediction" and stacked)):
        raise CheckpointError(f"{graph.path}: a {head} head of {len(group)} Linear layers (a distribution head) "
                              "cannot be named from the structure without config.json saying which distribution "
                              "it is (a per-channel one not at all): export with node names or metadata kept")
    elif head == "prediction" and (len(group) > 1 or not share_projection):
        for channel, linear in enumerate(_per_channel(graph, group)):  # stacked in channel order
            _assign(named, f"head.channel_projection.{channel}", linear)
    else:
        _assign(named, "head.linear" if head in ("pretraining", "classification") else "head.projection", group[0])
    return named


def _distribution_parameters(graph: OnnxGraph, group: list[_Linear], distribution: str) -> list[_Linear]:
    """A distribution head's projections in transformers' parameter order, told apart by what follows each:
    squareplus, (x + sqrt(x² + 4)) / 2, maps a parameter to the positive numbers (student_t's df and scale,
    normal's scale, negative_binomial's total count); student_t's scale is then clamped, its df is not."""
    def reaches(linear, ops, limit):
        return _forward_to(graph, linear.output, lambda n, i: n.op_type in ops, limit=limit,
                           passing=_PASS_THROUGH + ("Pow", "Sqrt")) is not None

    positive = [linear for linear in group if reaches(linear, ("Sqrt",), 6)]
    other = [linear for linear in group if linear not in positive]
    order = None
    if distribution == "student_t" and len(positive) == 2 and len(other) == 1:
        clamped = [linear for linear in positive if reaches(linear, ("Clip", "Max"), 10)]
        if len(clamped) == 1:
            df = next(linear for linear in positive if linear is not clamped[0])
            order = [df, other[0], clamped[0]]
    elif len(positive) == 1 and len(other) == 1:
        order = {"normal": [other[0], positive[0]], "negative_binomial": [positive[0], other[0]]}.get(distribution)
    if order is None:
        raise CheckpointError(f"{graph.path}: cannot tell the {distribution} head's parameters apart by the maps "
                              f"after them ({len(positive)} positive of {len(group)})")
    return order


def _name_norms(graph: OnnxGraph, uses, linear_nodes, layers: int, named: dict) -> None:
    norms = {}
    for use in uses:
        if use.node.op_type in ("BatchNormalization", "LayerNormalization", "SkipLayerNormalization") and use.role \
                and use.role != "linear_bias":
            norms.setdefault(id(use.node), (use.node, {}))[1][use.role] = use.array
    if not norms:
        return
    depth = _depths(graph, linear_nodes)
    ordered = sorted(norms.values(), key=lambda entry: depth[id(entry[0])])
    if layers == 0 or len(ordered) not in (2 * layers, 3 * layers):
        raise CheckpointError(f"{graph.path}: {len(ordered)} norms for {layers} encoder layers")
    kinds = ("attention", "channel_attention", "ff") if len(ordered) == 3 * layers else ("attention", "ff")
    for position, (node, stats) in enumerate(ordered):
        layer, kind = divmod(position, len(kinds))
        norm = "batchnorm" if node.op_type == "BatchNormalization" else "layernorm"  # or onnxruntime's Skip-
        for stat, array in stats.items():
            named[f"encoder_layers.{layer}.{kinds[kind]}_{norm}.{stat}"] = array


def _positions(graph: OnnxGraph, embedding: list[_Linear], d_model: int):
    """(positional table, cls token or None) as the graph adds them to the embedded patches, when that is one
    constant. An exporter that folds constants leaves ``position_enc[1:]`` and ``cls_token + position_enc[0]``
    (even expanded to the batch) instead of the two tensors: the table then gets a zero row 0 and the token
    the sum, which computes the same numbers bit for bit."""
    def adds_a_table(node, index):
        if node.op_type != "Add":
            return False
        found = graph.constant(node.input[1 - index])
        return found is not None and found[0].ndim == 2 and found[0].shape[1] == d_model

    reached = _forward_to(graph, embedding[0].output, adds_a_table, passing=_PASS_THROUGH + ("Concat",))
    if reached is None:
        return None, None
    node, index = reached
    table = graph.constant(node.input[1 - index])[0]
    concat = _forward_to(graph, node.output[0], lambda n, i: n.op_type == "Concat")
    if concat is None:
        return table, None
    for value in concat[0].input[:concat[1]]:  # the token comes first
        found = graph.constant(value)
        producer = graph.producer.get(value)
        if found is None and producer is not None and producer.op_type in ("Expand", "Tile"):
            found = graph.constant(producer.input[0])
        if found is not None and found[0].shape[-1] == d_model:
            token = found[0].reshape(-1, d_model)[0].reshape(1, 1, 1, d_model)
            return np.concatenate([np.zeros((1, d_model), table.dtype), table]), token
    return table, None


# --------------------------------------------------------------------------------------------------
# The config, when no config.json comes with the file
# --------------------------------------------------------------------------------------------------
_HEAD_CLASSES = {"PatchTSTPredictionHead": "prediction", "PatchTSTMaskPretrainHead": "pretraining",
                 "PatchTSTClassificationHead": "classification", "PatchTSTRegressionHead": "regression"}
_DISTRIBUTION_CLASSES = {"StudentTOutput": "student_t", "NormalOutput": "normal",
                         "NegativeBinomialOutput": "negative_binomial"}
ARCHITECTURES = {"prediction": "PatchTSTForPrediction", "pretraining": "PatchTSTForPretraining",
                 "classification": "PatchTSTForClassification", "regression": "PatchTSTForRegression",
                 "none": "PatchTSTModel"}


def _class_names(graph: OnnxGraph) -> set[str]:
    """The module classes the dynamo exporter records (``pkg.torch.onnx.class_hierarchy``), last parts."""
    found = set()
    for node in graph.graph.node:
        for entry in node.metadata_props:
            if entry.key == "pkg.torch.onnx.class_hierarchy":
                found.update(part.strip(" '\"[]").rsplit(".", 1)[-1] for part in entry.value.split(","))
    return found


def looks_like_patchtst(graph: OnnxGraph) -> bool:
    """PatchTST's module classes in the metadata, its module names in node or tensor names, or, in a graph
    without names, its patchify step (a gather of [patches, patch_length] indices, or one slice per patch)
    feeding a Linear patch embedding."""
    classes = _class_names(graph)
    if classes:
        return any(name.startswith("PatchTST") for name in classes)
    if any("/patchifier/" in node.name or "/encoder/layers." in node.name for node in graph.graph.node) or \
            any("positional_encoder" in name or "encoder.layers." in name for name in graph.initializers):
        return True
    patchify = bool(unfold_slices(graph)) or any(
        node.op_type == "Gather" and (found := graph.constant(node.input[1])) is not None
        and found[0].ndim == 2 and found[0].dtype.kind == "i" for node in graph.graph.node)
    linears = _linears(graph, graph.weight_uses())
    return patchify and bool(linears) and linears[0].depth == 0


def head_of_graph(graph: OnnxGraph) -> str:
    """The head a graph computes: from the module classes its metadata records, else from the rank of its
    first output (prediction [batch, horizon, channels]; pretraining or none [batch, channels, patches, ...];
    classification [batch, targets])."""
    heads = {_HEAD_CLASSES[name] for name in _class_names(graph) if name in _HEAD_CLASSES}
    if len(heads) == 1:
        return heads.pop()
    output = graph.graph.output[0]
    rank = len(output.type.tensor_type.shape.dim)
    if rank == 3:
        return "prediction"
    if rank in (1, 2):  # [batch, targets], squeezed when there is one target: told apart in load_onnx
        return "classification"
    if rank == 4:
        return "pretraining"  # told apart from a bare PatchTSTModel by its Linear layers (see load_onnx)
    raise CheckpointError(f"{graph.path}: cannot tell the head from the graph's output {output.name!r} of rank {rank}")


def _static(dimension) -> int | None:
    return dimension.dim_value if dimension.HasField("dim_value") and dimension.dim_value > 0 else None


def _stride(graph: OnnxGraph, context: int, patch: int, patches: int) -> int | None:
    """The patch stride: the only one that gives this many patches, else the one the patchify step shows
    (the dynamo exporter's record of the ``unfold`` call, its gather indices or range step, or the
    TorchScript exporter's slice starts) among those that fit."""
    span = max(context, patch) - patch
    fitting = [stride for stride in range(1, span + 2) if span // stride + 1 == patches]
    if len(fitting) == 1 or patches == 1:
        return fitting[0] if fitting else None
    seen = set()
    for node in graph.graph.node:
        for entry in node.metadata_props:
            if entry.key == "pkg.torch.onnx.fx_node":
                call = re.search(r"aten\.unfold\.default\]\(args = \(%\w+, -?\d+, (\d+), (\d+)\)", entry.value)
                if call and int(call.group(1)) == patch:
                    seen.add(int(call.group(2)))
        if node.op_type == "Gather":
            found = graph.constant(node.input[1])
            if found is not None and found[0].shape == (patches, patch) and found[0].dtype.kind == "i":
                seen.add(int(found[0][1, 0] - found[0][0, 0]))
        if node.op_type == "Range":
            found = graph.constant(node.input[2])
            if found is not None and found[0].size == 1:
                seen.add(int(found[0].reshape(-1)[0]))
    for starts in unfold_slices(graph).values():  # the TorchScript exporter's unfold: one slice per patch
        starts = sorted(starts)
        seen.update(b - a for a, b in zip(starts, starts[1:]))
    shown = seen & set(fitting)
    return shown.pop() if len(shown) == 1 else None


def _heads(graph: OnnxGraph, q: _Linear, d_model: int) -> int | None:
    value, seen = q.output, 0
    while seen < 12:
        consumers = graph.consumers.get(value, [])
        if not consumers:
            return None
        node = consumers[0][0]
        if node.op_type == "Reshape":  # [batch x channels, patches, heads or -1, head_dim]
            heads, head_dim = _shape_tail(graph, node.input[1])
            if head_dim and head_dim > 0 and d_model % head_dim == 0 and heads in (None, -1, d_model // head_dim):
                return d_model // head_dim
        if node.op_type in _PRODUCTS:
            return None
        value, seen = node.output[0], seen + 1
    return None


def _two_parameter_distribution(graph: OnnxGraph, tensors) -> str | None:
    """normal (loc, then a positive scale) or negative_binomial (a positive total count, then logits): whether
    the first parameter's projection reaches the square root of transformers' squareplus, (x + sqrt(x² + 4)) / 2,
    which maps a parameter to the positive numbers."""
    for use in graph.weight_uses():
        if use.role != "weight" or use.array.ndim != 2:
            continue
        for name in ("head.projection.proj.0.weight", "head.projections.0.proj.0.weight"):
            if name in tensors and tensors[name].shape == use.array.shape and np.array_equal(tensors[name], use.array):
                node = use.node
                if node.op_type == "MatMul":
                    node = next((c for c, _ in graph.consumers.get(node.output[0], []) if c.op_type == "Add"), node)
                positive = _forward_to(graph, node.output[0], lambda n, i: n.op_type == "Sqrt", limit=6,
                                       passing=_PASS_THROUGH + ("Pow",))
                return "negative_binomial" if positive is not None else "normal"
    return None


def _shape_tail(graph: OnnxGraph, value: str) -> tuple[int | None, int | None]:
    """The last two entries of a 4-entry reshape target, where constant (a target assembled by Concat from
    runtime sizes and constants counts too)."""
    found = graph.constant(value)
    if found is not None:
        return (int(found[0][-2]), int(found[0][-1])) if found[0].size == 4 else (None, None)
    node = graph.producer.get(value)
    if node is None or node.op_type != "Concat" or len(node.input) != 4:
        return None, None
    tail = [graph.constant(part) for part in node.input[2:]]
    entries = [int(part[0].reshape(-1)[0]) if part is not None and part[0].size == 1 else None for part in tail]
    return entries[0], entries[1]


def infer_config(graph: OnnxGraph, tensors: dict[str, np.ndarray], head: str):
    """A PatchTSTConfig recovered from the graph and its named weights, and the fields it could not see
    (those keep transformers' defaults; none of them changes what inference computes)."""
    from .config import PatchTSTConfig
    from .detection import detect_patchtst
    from .mapping import map_patchtst_weights

    mapped = map_patchtst_weights(tensors).mapped
    inputs = graph.inputs[0].type.tensor_type.shape.dim if graph.inputs else []
    channels = _static(inputs[2]) if len(inputs) == 3 else None
    report = detect_patchtst(mapped, hint=head, num_input_channels=channels)
    values: dict = {"model_type": "patchtst", "architectures": [ARCHITECTURES[head]]}

    def need(field, value, how):
        if value is None:
            raise CheckpointError(f"{graph.path}: no config.json beside it, and {field} cannot be read off the graph "
                                  f"({how}); put the model's config.json beside the file")
        values[field] = value

    need("num_input_channels", channels or report.num_input_channels, "its input's channel dimension is dynamic")
    need("context_length", _static(inputs[1]) if len(inputs) == 3 else None, "its input's time dimension is dynamic")
    need("d_model", report.d_model, "no patch embedding")
    need("patch_length", report.patch_input_width, "no patch embedding")
    num_positions = report.num_positions
    need("patch_stride", None if num_positions is None else _stride(
        graph, values["context_length"], values["patch_length"], num_positions - int(report.use_cls_token)),
        "the patchify step is not one the loader knows")
    values.update(num_hidden_layers=report.num_hidden_layers, share_embedding=report.share_embedding,
                  use_cls_token=report.use_cls_token)
    if report.positional_encoding_type:
        values["positional_encoding_type"] = report.positional_encoding_type
    linears = _linears(graph, graph.weight_uses())
    groups = _by_depth(linears)
    depth = _depths(graph, {id(linear.node) for linear in linears})  # every node's, for what follows
    if not report.num_hidden_layers:
        values["num_attention_heads"] = 1  # no attention: any divisor of d_model computes the same
    else:
        values.update(ffn_dim=report.ffn_dim, norm_type=report.norm_type, channel_attention=report.channel_attention,
                      bias=report.bias)
        need("num_attention_heads", _heads(graph, _attention_roles(graph, groups[1])[0], report.d_model),
             "no reshape into heads after the first query projection")
        norm = next((node for node in graph.graph.node
                     if node.op_type in ("BatchNormalization", "LayerNormalization", "SkipLayerNormalization")), None)
        if norm is None:
            raise CheckpointError(f"{graph.path}: an encoder without BatchNormalization or LayerNormalization nodes "
                                  f"(found {graph.describe()}); put the model's config.json beside the file")
        values["norm_eps"] = _decimal(graph.attribute(norm, "epsilon", 1e-5))
        values["pre_norm"] = depth[id(norm)] <= groups[1][0].depth
        activations = {node.op_type for node in graph.graph.node
                       if groups[1][0].depth < depth[id(node)] and node.op_type in ("Gelu", "Relu", "Erf")}
        activations |= {_text(graph.attribute(node, "activation", b"")) for node in graph.graph.node
                        if node.op_type == "FusedGemm"}  # onnxruntime folds a ReLU into the Gemm before it
        activations.discard("")
        values["activation_function"] = "relu" if activations == {"Relu"} else "gelu"
        if any(node.op_type == "Gelu" and graph.attribute(node, "approximate", b"none") not in (b"none", "none")
               for node in graph.graph.node):
            raise CheckpointError(f"{graph.path}: a tanh-approximated GELU, which PatchTST does not use")
    data = graph.from_input()
    before = [node for node in graph.graph.node if node.op_type in ("Sqrt", "Abs") and depth[id(node)] == 0
              and node.input[0] in data]
    kinds = {node.op_type for node in before}
    values["scaling"] = "std" if "Sqrt" in kinds else ("mean" if "Abs" in kinds else None)
    if values["scaling"] == "std":
        sqrt = next(node for node in before if node.op_type == "Sqrt")
        add = graph.producer.get(sqrt.input[0])
        found = add is not None and add.op_type == "Add" and next(
            (constant for constant in map(graph.constant, add.input) if constant is not None), None)
        if found:
            values["minimum_scale"] = _decimal(found[0].reshape(-1)[0])
    params = report.distribution_parameter_count
    if params:
        names = {_DISTRIBUTION_CLASSES[name] for name in _class_names(graph) if name in _DISTRIBUTION_CLASSES}
        distribution = names.pop() if len(names) == 1 else (
            "student_t" if params == 3 else _two_parameter_distribution(graph, tensors))
        need("distribution_output", distribution, "a 2-parameter distribution head: normal or negative binomial")
        values["loss"] = "nll"
    head_weight = next((mapped[name] for name in ("head.projection.weight", "head.linear.weight",
                                                  "head.channel_projection.0.weight", "head.distribution.0.weight",
                                                  "head.channel_distribution.0.0.weight") if name in mapped), None)
    if head == "prediction":
        values["prediction_length"] = head_weight.shape[0]
        values["share_projection"] = report.share_projection
        pooled = head_weight.shape[1] == report.d_model
        values["pooling_type"] = _pooling(graph, linears, depth) if pooled and not report.use_cls_token else (
            "mean" if pooled else None)
    elif head in ("classification", "regression"):
        if any(node.op_type == "Sigmoid" or (node.op_type == "FusedGemm"  # onnxruntime folds it into the Gemm
                                             and _text(graph.attribute(node, "activation", b"")) == "Sigmoid")
               for node in graph.graph.node):  # only a regression head has one
            need("output_range", None, "a regression head's output range is folded into unnamed constants")
        values["num_targets"] = head_weight.shape[0]
        values["pooling_type"] = "mean" if report.use_cls_token else _pooling(graph, linears, depth)
    inferred = sorted(values)
    try:
        config = PatchTSTConfig.from_dict(values, source=f"{graph.path} (config recovered from the graph)")
    except Exception as error:
        raise CheckpointError(f"{graph.path}: the config recovered from the graph is not valid: {error}") from None
    return config, inferred


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decimal(value) -> float:
    """A float32 attribute as the decimal it was written from (1e-05, not 9.99999974e-06): the shortest
    decimal that rounds to the same float32, which is what a float64 model must use."""
    return float(repr(np.float32(value)).removeprefix("np.float32(").removesuffix(")"))


def _pooling(graph: OnnxGraph, linears: list[_Linear], depth: dict[int, int]) -> str | None:
    """How the head pools the patches: the reduction between the encoder's last Linear and the head's
    (``depth``: every node's Linear depth, ``_depths``)."""
    ops = {node.op_type for node in graph.graph.node if depth[id(node)] == linears[-1].depth}
    if "ReduceMax" in ops:
        return "max"
    return "mean" if "ReduceMean" in ops else None


# --------------------------------------------------------------------------------------------------
# The family's entry point
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class OnnxLoad:
    """What an ONNX file gives: the config (from config.json, or recovered: ``inferred`` lists its fields),
    the weights under checkpoint names, how each was named, and warnings about the file."""

    config: object
    tensors: dict[str, np.ndarray]
    named_by: dict[str, str]
    inferred: list[str]
    warnings: list[str]


def load_onnx(graph: OnnxGraph, config=None) -> OnnxLoad:
    """A PatchTST checkpoint out of an exported ONNX graph (``config``: from a config.json beside it)."""
    from ...formats.onnx import has_legacy_unfold
    from .detection import head_of_config

    head = head_of_config(config) if config is not None else None
    if head is None:
        head = head_of_graph(graph)
        if head == "classification" and config is not None and (config.has_distribution_head or config.output_range):
            head = "regression"  # a config.json without architectures: only a regression head uses these
    if config is None and head == "classification" and any(
            ".head.projection." in f".{name}" for name in named_weights(graph.weight_uses())[0]):
        head = "regression"  # transformers names the regression head's Linear "projection", not "linear"
    checkpoint = checkpoint_from_graph(graph, head, config)
    tensors = checkpoint.tensors
    if config is None and head == "pretraining" and "head.linear.weight" not in tensors:
        head = "none"  # [batch, channels, patches, d_model] out of a bare PatchTSTModel
    inferred: list[str] = []
    if config is None:
        config, inferred = infer_config(graph, tensors, head)
    for key in list(tensors):  # BatchNorm's batch counter: a training statistic no graph carries
        if key.endswith(".batchnorm.running_mean"):
            counter = key.replace(".running_mean", ".num_batches_tracked")
            if counter not in tensors:
                tensors[counter], checkpoint.named_by[counter] = np.zeros((), np.int64), "absent from the graph (a training counter, set to 0)"
    warnings = []
    if has_legacy_unfold(graph):
        warnings.append(
            f"{graph.path} was written by torch's TorchScript exporter (dynamo=False), whose graph for "
            "Tensor.unfold swaps two axes: onnxruntime refuses the file or, when patches equal channels, computes "
            "wrong numbers. Its weights are right and rustml_nb loads them; do not run the file's graph.")
    return OnnxLoad(config, tensors, checkpoint.named_by, inferred, warnings)
