"""Matrix products over rows, computed the same way for a row wherever it is.

``matmul(rows, weight, out)`` is ``np.dot(rows, weight, out)`` for ``rows [count, width]`` and ``weight
[width, features]`` ([in, out]), with one guarantee BLAS does not give: out[i, j] is the chain of fused
multiply-adds ``((rows[i, 0] * weight[0, j] + 0) + rows[i, 1] * weight[1, j]) + ...`` in the order of
``width``, whatever ``count`` is and wherever row i lies. So a series' result does not depend on the other
rows of the call (its batch, its chunk, its Dask partition); OpenBLAS rounds a row differently with the
number of rows and the row's place among them, in ways that change with the kernel it picks for the CPU.

The product runs tiles of 8 rows (6 without AVX-512) by one or two SIMD vectors of columns, each tile's
outputs in registers across the whole of ``width`` (16 accumulators: the 32 registers of AVX-512 leave room
for the weight's vectors and the broadcast row values; 12 in AVX2's 16). The weight is not copied (packed)
on every call, as BLAS does: the models' weights are small, so a column panel of the weight can stay in the
L1 cache while the rows stream past it, and a call over a few rows (a batch of one) costs no packing.
``benchmarks/README.md`` has the speeds; on a CPU without FMA instructions the fused multiply-add is
computed in software, exact but slow.

A weight can instead be packed once, when a model loads (``pack_weight``; the mixers' MLPs and gates are):
its columns cut into panels of ``PANEL_BYTES``, each panel's rows one after another. Unpacked, a panel's rows
lie a whole row of the weight apart, and for most widths those rows fall in a few of the L1 cache's sets (a
[192, 384] float32 weight's rows are 1536 bytes apart: 16 of its 64 sets), so the panel does not stay in L1;
packed, it does, and the hardware prefetcher reads it in order. The products are the same numbers either way.

The tile is written in LLVM IR (a Numba ``intrinsic``, with ``simd.Vectors``): Numba's loops cannot keep a
vector of accumulators in registers. Its vector width is that of the CPU the code is compiled for.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numpy.lib.stride_tricks import as_strided
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..jit import kernel
from .simd import Vectors, lanes_and_rows

# A packed weight's panel width in bytes: two AVX-512 vectors (four AVX2 ones), whatever CPU the kernels are
# compiled for, so that packing does not depend on it.
PANEL_BYTES = 128


def pack_weight(weight: np.ndarray) -> np.ndarray:
    """weight [..., width, features] ([in, out]) -> [..., panels, width, PANEL_BYTES // itemsize], C-contiguous:
    panel p holds columns p * panel_width ... of every row, the last panel zero-padded. ``matmul`` takes either
    form."""
    weight = np.asarray(weight)
    panel_width = PANEL_BYTES // weight.itemsize
    *leading, width, features = weight.shape
    panels = -(-features // panel_width)
    padded = np.zeros((*leading, width, panels * panel_width), dtype=weight.dtype)
    padded[..., :features] = weight
    return np.ascontiguousarray(np.moveaxis(padded.reshape(*leading, width, panels, panel_width), -2, -3))


def _make_tile(vectors_per_row: int, masked: bool):
    """A tile of ``vectors_per_row`` SIMD vectors of columns; ``masked`` for the last columns of a row when fewer
    than that remain."""

    @intrinsic
    def tile(typingctx, rows, first_row, row_count, weight, weight_column, column_count, bias, out, out_column):
        """out[first_row + r, out_column + c] = rows[first_row + r] @ weight[:, weight_column + c] (+ bias[out_column
        + c] unless bias is empty) for r < row_count (at most ``tile_shape()[1]``) and c < column_count
        (``vectors_per_row`` vectors, or fewer columns when ``masked``)."""
        sig = types.void(rows, first_row, row_count, weight, weight_column, column_count, bias, out, out_column)

        def codegen(context, builder, signature, args):
            a_value, i0, row_count_value, w_value, j0, column_count_value, b_value, c_value, out_j0 = args
            b = context.make_array(signature.args[6])(context, builder, b_value)
            a = context.make_array(signature.args[0])(context, builder, a_value)
            w = context.make_array(signature.args[3])(context, builder, w_value)
            c = context.make_array(signature.args[7])(context, builder, c_value)
            vectors = Vectors(context, builder, context.get_data_type(signature.args[0].dtype))
            itemsize, lanes, tile_rows, vector = vectors.itemsize, vectors.lanes, vectors.tile_rows, vectors.type
            i64 = ir.IntType(64)

            def element_strides(array):
                return [builder.sdiv(s, i64(itemsize)) for s in cgutils.unpack_tuple(builder, array.strides)]

            (a_row_stride, a_step), (w_row_stride, _), (c_row_stride, _) = map(element_strides, (a, w, c))
            width = cgutils.unpack_tuple(builder, a.shape)[1]
            # Rows past row_count repeat the last row (their results are not stored), so that every tile
            # runs the same code.
            last = builder.sub(row_count_value, i64(1))
            row_pointers = [builder.gep(a.data, [builder.mul(builder.add(i0, builder.select(
                builder.icmp_signed("<", i64(r), row_count_value), i64(r), last)), a_row_stride)])
                for r in range(tile_rows)]
            weight_start = builder.gep(w.data, [j0])
            masks = [vectors.mask(builder.sub(column_count_value, i64(v * lanes))) if masked else None
                     for v in range(vectors_per_row)]
            zero = vectors.zero

            def load_vector(pointer, v):
                return vectors.load(builder.gep(pointer, [i64(v * lanes)]), masks[v])

            entry = builder.block
            loop = builder.append_basic_block("tile.loop")
            done = builder.append_basic_block("tile.done")
            builder.cbranch(builder.icmp_signed(">", width, i64(0)), loop, done)
            builder.position_at_end(loop)
            k = builder.phi(i64)
            k.add_incoming(i64(0), entry)
            sums = [[builder.phi(vector) for _ in range(vectors_per_row)] for _ in range(tile_rows)]
            for row in sums:
                for phi in row:
                    phi.add_incoming(zero, entry)
            weight_row = builder.gep(weight_start, [builder.mul(k, w_row_stride)])
            weights = [load_vector(weight_row, v) for v in range(vectors_per_row)]
            offset = builder.mul(k, a_step)
            updated = []
            for r in range(tile_rows):
                value = builder.load(builder.gep(row_pointers[r], [offset]))
                spread = vectors.broadcast(value)
                updated.append([vectors.fma(spread, weights[v], sums[r][v]) for v in range(vectors_per_row)])
            k_next = builder.add(k, i64(1))
            k.add_incoming(k_next, builder.block)
            for r in range(tile_rows):
                for v in range(vectors_per_row):
                    sums[r][v].add_incoming(updated[r][v], builder.block)
            builder.cbranch(builder.icmp_signed("<", k_next, width), loop, done)
            builder.position_at_end(done)
            results = []
            for r in range(tile_rows):
                row_results = []
                for v in range(vectors_per_row):
                    phi = builder.phi(vector)
                    phi.add_incoming(zero, entry)
                    phi.add_incoming(updated[r][v], loop)
                    row_results.append(phi)
                results.append(row_results)
            # The bias, added to the finished sums (as a separate pass would add it), when there is one.
            has_bias = builder.icmp_signed(">", cgutils.unpack_tuple(builder, b.shape)[0], i64(0))
            before_bias = builder.block
            with builder.if_then(has_bias):
                bias_start = builder.gep(b.data, [out_j0])
                biases = [load_vector(bias_start, v) for v in range(vectors_per_row)]
                with_bias = [[builder.fadd(results[r][v], biases[v]) for v in range(vectors_per_row)]
                             for r in range(tile_rows)]
                bias_block = builder.block
            finished = []
            for r in range(tile_rows):
                row_results = []
                for v in range(vectors_per_row):
                    phi = builder.phi(vector)
                    phi.add_incoming(results[r][v], before_bias)
                    phi.add_incoming(with_bias[r][v], bias_block)
                    row_results.append(phi)
                finished.append(row_results)
            results = finished
            out_start = builder.gep(c.data, [builder.add(builder.mul(i0, c_row_stride), out_j0)])
            for r in range(tile_rows):
                with builder.if_then(builder.icmp_signed("<", i64(r), row_count_value), likely=True):
                    out_row = builder.gep(out_start, [builder.mul(i64(r), c_row_stride)])
                    for v in range(vectors_per_row):
                        vectors.store(results[r][v], builder.gep(out_row, [i64(v * lanes)]), masks[v])
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile_1, _tile_1_masked = _make_tile(1, False), _make_tile(1, True)
_tile_2, _tile_2_masked = _make_tile(2, False), _make_tile(2, True)


@intrinsic
def tile_shape(typingctx, array):
    """(values per SIMD vector, rows per tile) for ``array``'s dtype on this CPU."""
    sig = types.UniTuple(types.intp, 2)(array)

    def codegen(context, builder, signature, args):
        scalar = context.get_data_type(signature.args[0].dtype)
        lanes, tile_rows = lanes_and_rows(context, context.get_abi_sizeof(scalar))
        return context.make_tuple(builder, signature.return_type,
                                  [ir.Constant(ir.IntType(64), lanes), ir.Constant(ir.IntType(64), tile_rows)])

    return sig, codegen


# matmul and matmul_bias are inlined into their callers (no compile of their own there), and hand _product the
# rows as a view of any layout (``[:, ::1]``) and the weight as panels of any layout (``panels_of``), so that
# _product compiles once per dtype, not once for each layout of rows (C-contiguous, strided, transposed) or
# form of weight its callers have. Its code is linked into, and optimized again inside, every kernel that calls
# it: each compile of it costs every first run.


@kernel(inline="always")
def matmul(rows, weight, out):
    """out = rows @ weight, each out[i, j] the fused multiply-adds over ``width`` in order: rows [count,
    width] (any strides), weight [width, features] with consecutive columns or ``pack_weight``'s [panels, width,
    panel_width], out [count, features] with consecutive columns."""
    _product(rows[:, ::1], panels_of(weight, out), np.empty(0, dtype=out.dtype), out)


@kernel(inline="always")
def matmul_bias(rows, weight, bias, out):
    """out = rows @ weight + bias: ``matmul``, then bias [features] added to each finished row, in registers
    (the same numbers as a pass adding it afterwards)."""
    if bias.shape[0] != out.shape[1]:
        raise ValueError("matmul_bias: the bias does not match the outputs")
    _product(rows[:, ::1], panels_of(weight, out), bias, out)


@kernel
def panels_of(weight, out):
    """The weight as [panels, width, PANEL_BYTES // itemsize] of any layout: ``pack_weight``'s as it is, a weight
    [width, features] as a view of its column panels (the last one reaching past the end of the rows, where
    nothing is read). Not inlined: a copy of the view's code at every product a kernel has took seconds of
    its first compile."""
    if weight.ndim == 3:
        return weight[:, :, ::1]
    if weight.shape[1] != out.shape[1]:
        raise ValueError("matmul: shapes do not match")
    if weight.size and weight.shape[1] > 1 and weight.strides[1] != weight.itemsize:
        raise ValueError("matmul: the weight's columns must be consecutive")
    panel_width = PANEL_BYTES // weight.itemsize
    panels = (weight.shape[1] + panel_width - 1) // panel_width
    return as_strided(weight, shape=(panels, weight.shape[0], panel_width),
                      strides=(PANEL_BYTES, weight.strides[0], weight.itemsize))[:, :, ::1]


@kernel
def _product(rows, panels, bias, out):
    count, features = out.shape
    lanes, tile_rows = tile_shape(out)
    tile_width = 2 * lanes
    panel_width = panels.shape[2]  # a whole number of tile widths
    if (rows.shape[0] != count or panels.shape[1] != rows.shape[1]
            or not (panels.shape[0] - 1) * panel_width < features <= panels.shape[0] * panel_width):
        raise ValueError("matmul: shapes do not match")
    if out.size and features > 1 and out.strides[1] != out.itemsize:
        raise ValueError("matmul: out's columns must be consecutive")
    # Rows of a panel a multiple of 1 KiB apart (a [128, 512] float64 weight's are 4 KiB apart) fall in the
    # same few L1 cache sets, so that the panel does not stay in L1 even when packing would be worth little (a
    # weight used once): over many rows, each tile's columns of such a weight are first copied together
    # (float64 [512, 128] @ [128, 512] on AVX2: 39 -> 63 GFLOP/s).
    copied = count >= 8 * tile_rows and features > tile_width and panels.strides[1] % 1024 == 0
    copy = np.empty((rows.shape[1] if copied else 0, tile_width), dtype=out.dtype)
    for j0 in range(0, features, tile_width):
        columns = min(tile_width, features - j0)
        source, first_column = panels[j0 // panel_width], j0 % panel_width
        if copied:
            for k in range(copy.shape[0]):
                target, weight_row = copy[k], source[k, first_column:first_column + columns]
                for c in range(columns):
                    target[c] = weight_row[c]
            source, first_column = copy[:, ::1], 0
        for i0 in range(0, count, tile_rows):
            row_count = min(tile_rows, count - i0)
            if columns == tile_width:
                _tile_2(rows, i0, row_count, source, first_column, columns, bias, out, j0)
            elif columns > lanes:
                _tile_2_masked(rows, i0, row_count, source, first_column, columns, bias, out, j0)
            elif columns == lanes:
                _tile_1(rows, i0, row_count, source, first_column, columns, bias, out, j0)
            else:
                _tile_1_masked(rows, i0, row_count, source, first_column, columns, bias, out, j0)
