"""SIMD vectors of the CPU's full width, written in LLVM IR (Numba intrinsics).

Numba's own loops vectorize at most 256 bits wide where LLVM prefers that (as it does for every AVX-512
CPU of Intel's since Skylake), and keep a ``x * a + b`` a multiplication and an addition. Code here uses
the widest vectors of the CPU the code is compiled for and fused multiply-adds: ``gemm``'s tile, and the
float32 activations that are the mixers' costliest row-wise work (``flat_map``: GELU, exp), about twice
as fast as the same formula in a Numba loop; the softmax gate's exponentials, totals and scaling in one
pass (``softmax_scale``); and transposes of 16 x 16 tiles by shuffles (``transposed_tile``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic


def lanes_and_rows(context, itemsize):
    """(values per SIMD vector, rows of gemm's tile) for the CPU the code is compiled for (Numba's target
    machine features; the host's where a Numba version does not expose them)."""
    features = getattr(context.codegen(), "_tm_features", None)
    if features is None:
        from llvmlite import binding

        features = numba_config.CPU_FEATURES or binding.get_host_cpu_features().flatten()
    if "+avx512f" in features:
        return 64 // itemsize, 8
    if "+avx" in features:
        return 32 // itemsize, 6
    return 16 // itemsize, 6


class Vectors:
    """IR for vectors of one scalar type, in one intrinsic's ``codegen``: the CPU's widest, or ``vector_bytes``
    wide whatever the CPU (LLVM splits a vector wider than the CPU's into several)."""

    def __init__(self, context, builder, scalar, vector_bytes=None):
        self.builder, self.scalar = builder, scalar
        self.itemsize = context.get_abi_sizeof(scalar)
        self.lanes, self.tile_rows = lanes_and_rows(context, self.itemsize)
        if vector_bytes is not None:
            self.lanes = vector_bytes // self.itemsize
        self.type = ir.VectorType(scalar, self.lanes)
        self.pointer_type = self.type.as_pointer()
        self.suffix = "v%d%s" % (self.lanes, "f32" if self.itemsize == 4 else "f64")
        self.zero = self.constant(0.0)

    def _function(self, name, result, arguments):
        return cgutils.get_or_insert_function(self.builder.module, ir.FunctionType(result, arguments), name)

    def constant(self, value):
        """A vector of ``value`` in every lane."""
        value = float(np.float32(value)) if self.itemsize == 4 else float(value)
        return ir.Constant(self.type, [ir.Constant(self.scalar, value)] * self.lanes)

    def fma(self, a, b, c):
        """a * b + c, rounded once."""
        return self.builder.call(self._function("llvm.fma." + self.suffix, self.type, [self.type] * 3), [a, b, c])

    def broadcast(self, value):
        """A vector of the scalar IR ``value`` in every lane."""
        i32 = ir.IntType(32)
        undefined = ir.Constant(self.type, ir.Undefined)
        return self.builder.shuffle_vector(self.builder.insert_element(undefined, value, i32(0)), undefined,
                                           ir.Constant(ir.VectorType(i32, self.lanes), [0] * self.lanes))

    def segment_totals(self, a, width):
        """Each lane the total of its segment of ``width`` lanes (a power of two, at most ``lanes``), summed by
        halves: lanes i and i ^ (width / 2) added, then i and i ^ (width / 4), ... (every lane of a segment ends
        with the same total)."""
        i32 = ir.IntType(32)
        step = width // 2
        while step >= 1:
            partner = ir.Constant(ir.VectorType(i32, self.lanes), [lane ^ step for lane in range(self.lanes)])
            a = self.builder.fadd(a, self.builder.shuffle_vector(a, a, partner))
            step //= 2
        return a

    def any(self, flags):
        """Whether any lane of the i1 vector ``flags`` is set."""
        flag_type = ir.VectorType(ir.IntType(1), self.lanes)
        return self.builder.call(self._function("llvm.vector.reduce.or.v%di1" % self.lanes, ir.IntType(1),
                                                [flag_type]), [flags])

    def floor(self, a):
        return self.builder.call(self._function("llvm.floor." + self.suffix, self.type, [self.type]), [a])

    def clamp(self, a, low, high):
        """a within [low, high]; NaN stays NaN."""
        builder = self.builder
        a = builder.select(builder.fcmp_ordered("<", a, low), low, a)
        return builder.select(builder.fcmp_ordered(">", a, high), high, a)

    def mask(self, count):
        """The lanes below ``count`` (an i64 value): a mask for ``load`` and ``store``."""
        i64, i32 = ir.IntType(64), ir.IntType(32)
        lane_numbers = ir.Constant(ir.VectorType(i64, self.lanes), list(range(self.lanes)))
        limit = self.builder.insert_element(ir.Constant(ir.VectorType(i64, self.lanes), ir.Undefined), count, i32(0))
        limit = self.builder.shuffle_vector(limit, limit, ir.Constant(ir.VectorType(i32, self.lanes), [0] * self.lanes))
        return self.builder.icmp_signed("<", lane_numbers, limit)

    def load(self, pointer, mask=None):
        """The vector at ``pointer`` (a scalar pointer); with ``mask``, its masked lanes only (zeros in the rest),
        reading no memory past them."""
        pointer = self.builder.bitcast(pointer, self.pointer_type)
        if mask is None:
            return self.builder.load(pointer, align=self.itemsize)
        i32, mask_type = ir.IntType(32), ir.VectorType(ir.IntType(1), self.lanes)
        load = self._function("llvm.masked.load.%s.p0%s" % (self.suffix, self.suffix), self.type,
                              [self.pointer_type, i32, mask_type, self.type])
        return self.builder.call(load, [pointer, i32(self.itemsize), mask, self.zero])

    def store(self, value, pointer, mask=None):
        pointer = self.builder.bitcast(pointer, self.pointer_type)
        if mask is None:
            self.builder.store(value, pointer, align=self.itemsize)
            return
        i32, mask_type = ir.IntType(32), ir.VectorType(ir.IntType(1), self.lanes)
        store = self._function("llvm.masked.store.%s.p0%s" % (self.suffix, self.suffix), ir.VoidType(),
                               [self.type, self.pointer_type, i32, mask_type])
        self.builder.call(store, [value, pointer, i32(self.itemsize), mask])


def flat_map(formula):
    """An intrinsic ``apply(values)``: values[:] = formula(values) over a C-contiguous 1-D array, a whole vector
    at a time, the last values masked, so each value is computed by the same instructions wherever it lies.
    ``formula(vectors, x)`` builds the IR of the result from the vector x with a ``Vectors``."""

    @intrinsic
    def apply(typingctx, values):
        if not (isinstance(values, types.Array) and values.ndim == 1 and values.layout == "C"):
            return None
        sig = types.void(values)

        def codegen(context, builder, signature, args):
            array = context.make_array(signature.args[0])(context, builder, args[0])
            vectors = Vectors(context, builder, context.get_data_type(signature.args[0].dtype))
            i64 = ir.IntType(64)
            size = cgutils.unpack_tuple(builder, array.shape)[0]
            whole = builder.sub(size, builder.srem(size, i64(vectors.lanes)))
            with cgutils.for_range_slice(builder, i64(0), whole, i64(vectors.lanes), inc=True) as (start, _):
                pointer = builder.gep(array.data, [start])
                vectors.store(formula(vectors, vectors.load(pointer)), pointer)
            with builder.if_then(builder.icmp_signed("<", whole, size)):
                pointer, mask = builder.gep(array.data, [whole]), vectors.mask(builder.sub(size, whole))
                vectors.store(formula(vectors, vectors.load(pointer, mask)), pointer, mask)
            return context.get_dummy_value()

        return sig, codegen

    return apply


# softmax_scale's and transposed_tile's vectors: 64 bytes (16 float32) on any CPU, so that a row's total is
# summed the same way on every CPU and a tile's row is one vector (LLVM runs each as two AVX2 vectors where
# there is no AVX-512).
FIXED_VECTOR_BYTES = 64


def softmax_scale(exp_formula, low, high):
    """An intrinsic ``apply(values, logits, totals) -> bool``: values[r] *= softmax(logits[r]) over rows of C-contiguous
    values, logits [rows, width], the exponentials by ``exp_formula(vectors, x)`` of the logits as they are (not
    shifted), for each row whose total of exponentials lies within [low, high] (powers of two, so that a bound
    is the same number in any dtype); the rest are left as they were. totals [rows] receives every row's total;
    logits may be left holding exponentials. Returns whether every row's total lay within the bounds.

    As torch does, each exponential is scaled by 1 / the row's total (rounded), then multiplies its value. A
    row's exponentials are summed in ``FIXED_VECTOR_BYTES`` vectors (lane i of the row's first vector, plus
    lane i of its next, ...; the last one masked), then across lanes by halves (``Vectors.segment_totals``).
    Rows as wide as a vector or half of one (a mixer's 8 or 16 patches) are taken a vector at a time, two rows to
    a vector for the narrower; other rows one at a time, their exponentials kept in logits for the scaling. The
    two ways give a row the same total (the lanes one holds beyond a row are zeros), so a row's result depends
    on the row alone, and is the same on every CPU."""

    @intrinsic
    def apply(typingctx, values, logits, totals):
        arrays = (values, logits, totals)
        if not (all(isinstance(a, types.Array) and a.layout == "C" for a in arrays) and values.ndim == logits.ndim == 2
                and totals.ndim == 1 and values.dtype == logits.dtype == totals.dtype):
            return None
        sig = types.boolean(values, logits, totals)

        def codegen(context, builder, signature, args):
            value_array, logit_array, total_array = (context.make_array(kind)(context, builder, arg)
                                                     for kind, arg in zip(signature.args, args))
            scalar = context.get_data_type(signature.args[0].dtype)
            vectors = Vectors(context, builder, scalar, FIXED_VECTOR_BYTES)
            lanes = vectors.lanes
            i64, i32, i1 = ir.IntType(64), ir.IntType(32), ir.IntType(1)
            count, width = cgutils.unpack_tuple(builder, value_array.shape)
            outside = cgutils.alloca_once_value(builder, ir.Constant(i1, 0))  # a row's total out of bounds

            def out_of_bounds(total, low_bound, high_bound):  # NaN too
                return builder.or_(builder.fcmp_unordered("<", total, low_bound),
                                   builder.fcmp_unordered(">", total, high_bound))

            done = builder.append_basic_block("softmax.done")
            one_row_at_a_time = builder.append_basic_block("softmax.rows")
            by_width = builder.switch(width, one_row_at_a_time)
            for segment in (lanes // 2, lanes):  # rows of `segment` values, lanes // segment to a vector
                block = builder.append_basic_block("softmax.width%d" % segment)
                by_width.add_case(i64(segment), block)
                builder.position_at_end(block)
                rows_per_vector = lanes // segment
                first_lanes = ir.Constant(ir.VectorType(i32, rows_per_vector), [k * segment for k in range(rows_per_vector)])
                to_segments = ir.Constant(ir.VectorType(i32, lanes), [lane // segment for lane in range(lanes)])
                ones = ir.Constant(ir.VectorType(scalar, rows_per_vector), [ir.Constant(scalar, 1.0)] * rows_per_vector)
                size = builder.mul(count, i64(segment))
                whole = builder.sub(size, builder.srem(size, i64(lanes)))

                def rows_of_a_vector(start, mask, row_count):
                    """The rows in lanes start ... (``mask``: the last vector's lanes, holding row_count rows)."""
                    exponentials = exp_formula(vectors, vectors.load(builder.gep(logit_array.data, [start]), mask))
                    row_totals = vectors.segment_totals(exponentials, segment)
                    first_row = builder.sdiv(start, i64(segment))
                    for k in range(rows_per_vector):
                        total = builder.extract_element(row_totals, i32(k * segment))
                        target = builder.gep(total_array.data, [builder.add(first_row, i64(k))])
                        if mask is None:
                            builder.store(total, target)
                        else:
                            with builder.if_then(builder.icmp_signed("<", i64(k), row_count)):
                                builder.store(total, target)
                    inverses = builder.fdiv(ones, builder.shuffle_vector(row_totals, row_totals, first_lanes))
                    inverses = builder.shuffle_vector(inverses, inverses, to_segments)
                    outside_lanes = out_of_bounds(row_totals, vectors.constant(low), vectors.constant(high))
                    kept = builder.not_(outside_lanes)
                    if mask is not None:
                        kept, outside_lanes = builder.and_(kept, mask), builder.and_(outside_lanes, mask)
                    pointer = builder.gep(value_array.data, [start])
                    scaled = builder.fmul(vectors.load(pointer, mask), builder.fmul(exponentials, inverses))
                    vectors.store(scaled, pointer, kept)
                    builder.store(builder.or_(builder.load(outside), vectors.any(outside_lanes)), outside)

                with cgutils.for_range_slice(builder, i64(0), whole, i64(lanes), inc=True) as (start, _):
                    rows_of_a_vector(start, None, None)
                with builder.if_then(builder.icmp_signed("<", whole, size)):
                    left = builder.sub(size, whole)
                    rows_of_a_vector(whole, vectors.mask(left), builder.sdiv(left, i64(segment)))
                builder.branch(done)

            builder.position_at_end(one_row_at_a_time)
            whole = builder.sub(width, builder.srem(width, i64(lanes)))
            last_mask = vectors.mask(builder.sub(width, whole))
            has_last = builder.icmp_signed("<", whole, width)
            with cgutils.for_range(builder, count) as row_loop:
                offset = builder.mul(row_loop.index, width)
                value_row = builder.gep(value_array.data, [offset])
                logit_row = builder.gep(logit_array.data, [offset])
                sums = cgutils.alloca_once_value(builder, vectors.zero)

                def exponentiate(start, mask):
                    pointer = builder.gep(logit_row, [start])
                    exponentials = exp_formula(vectors, vectors.load(pointer, mask))
                    if mask is not None:  # exp(0) in the masked lanes
                        exponentials = builder.select(mask, exponentials, vectors.zero)
                    vectors.store(exponentials, pointer, mask)
                    builder.store(builder.fadd(builder.load(sums), exponentials), sums)

                with cgutils.for_range_slice(builder, i64(0), whole, i64(lanes), inc=True) as (start, _):
                    exponentiate(start, None)
                with builder.if_then(has_last):
                    exponentiate(whole, last_mask)
                total = builder.extract_element(vectors.segment_totals(builder.load(sums), lanes), i32(0))
                builder.store(total, builder.gep(total_array.data, [row_loop.index]))
                total_outside = out_of_bounds(total, ir.Constant(scalar, low), ir.Constant(scalar, high))
                with builder.if_else(total_outside, likely=False) as (skipped, kept):
                    with skipped:
                        builder.store(ir.Constant(i1, 1), outside)
                    with kept:
                        inverse = vectors.broadcast(builder.fdiv(ir.Constant(scalar, 1.0), total))

                        def scale(start, mask):
                            pointer = builder.gep(value_row, [start])
                            exponentials = vectors.load(builder.gep(logit_row, [start]), mask)
                            vectors.store(builder.fmul(vectors.load(pointer, mask), builder.fmul(exponentials, inverse)),
                                          pointer, mask)

                        with cgutils.for_range_slice(builder, i64(0), whole, i64(lanes), inc=True) as (start, _):
                            scale(start, None)
                        with builder.if_then(has_last):
                            scale(whole, last_mask)
            builder.branch(done)
            builder.position_at_end(done)
            return builder.not_(builder.load(outside))

        return sig, codegen

    return apply


def exchange_stages(rows, columns, lanes):
    """The shuffles that carry a tile of rows x columns, held row after row in vectors of ``lanes`` values, to its
    transpose, held row after row in as many vectors: a list of stages, each a list of (first, second, mask), one
    per vector: the vector made of lanes ``mask`` of the two vectors (first, second) of the stage before (lanes
    ``lanes`` ... of the second). Stage s settles bit s of the index of the vector each value ends in, so 2^n
    vectors take n stages of one two-vector shuffle per vector (the radix-2 transpose)."""
    count = rows * columns // lanes
    stage_count = count.bit_length() - 1
    if not (rows * columns == count * lanes and count == 1 << stage_count):
        raise ValueError("exchange_stages: the tile must fill a power of two of vectors")
    values = [(r, c) for r in range(rows) for c in range(columns)]
    start = {value: divmod(value[0] * columns + value[1], lanes) for value in values}  # (vector, lane)
    end = {value: divmod(value[1] * rows + value[0], lanes) for value in values}
    held = [[None] * lanes for _ in range(count)]
    for value in values:
        held[start[value][0]][start[value][1]] = value
    stages = []
    for stage in range(stage_count):
        settled = (2 << stage) - 1  # the bits of the vector index that are the end's from this stage on
        gathered = [[] for _ in range(count)]
        for vector in held:
            for value in vector:
                gathered[start[value][0] & ~settled | end[value][0] & settled].append(value)
        if stage == stage_count - 1:
            gathered = [sorted(vector, key=lambda value: end[value][1]) for vector in gathered]
        shuffles = []
        for k, vector in enumerate(gathered):
            first, second = k & ~(1 << stage), k | (1 << stage)
            lane_of = {value: lane for lane, value in enumerate(held[first])}
            lane_of.update({value: lanes + lane for lane, value in enumerate(held[second])})
            shuffles.append((first, second, [lane_of[value] for value in vector]))
        stages.append(shuffles)
        held = gathered
    assert all(end[value] == (k, lane) for k, vector in enumerate(held) for lane, value in enumerate(vector))
    return stages


def transposed_tile(rows, columns, add):
    """An intrinsic ``apply(source, source_start, source_step, out, out_start, out_step)``: a tile of rows x columns
    (8 or 16 each, in ``FIXED_VECTOR_BYTES`` vectors of 16 float32) of flat source transposed into out (added to
    it when ``add``): the tile is held row after row in the vectors at source_start + v * source_step (v = 0, 1,
    ...; element offsets into the arrays' data: a vector holds a row of 16 columns, or two rows of 8), and its
    transpose goes row after row to the vectors at out_start + k * out_step. Moves values only (adds once)."""

    @intrinsic
    def apply(typingctx, source, source_start, source_step, out, out_start, out_step):
        if not (isinstance(source, types.Array) and isinstance(out, types.Array)
                and source.dtype == out.dtype == types.float32):
            return None
        sig = types.void(source, source_start, source_step, out, out_start, out_step)

        def codegen(context, builder, signature, args):
            source_array = context.make_array(signature.args[0])(context, builder, args[0])
            out_array = context.make_array(signature.args[3])(context, builder, args[3])
            vectors = Vectors(context, builder, context.get_data_type(signature.args[0].dtype), FIXED_VECTOR_BYTES)
            i32 = ir.IntType(32)
            stages = exchange_stages(rows, columns, vectors.lanes)

            def place(array, start, step, k):
                offset = builder.add(start, builder.mul(step, ir.Constant(start.type, k)))
                return builder.gep(array.data, [offset])

            held = [vectors.load(place(source_array, args[1], args[2], v)) for v in range(len(stages[0]))]
            for stage in stages:
                held = [builder.shuffle_vector(held[first], held[second], ir.Constant(ir.VectorType(i32, len(mask)), mask))
                        for first, second, mask in stage]
            for k, vector in enumerate(held):
                pointer = place(out_array, args[4], args[5], k)
                vectors.store(builder.fadd(vectors.load(pointer), vector) if add else vector, pointer)
            return context.get_dummy_value()

        return sig, codegen

    return apply
