"""SIMD vectors of the CPU's full width, written in LLVM IR (Numba intrinsics).

Numba's own loops vectorize at most 256 bits wide where LLVM prefers that (as it does for every AVX-512
CPU of Intel's since Skylake), and keep a ``x * a + b`` a multiplication and an addition. Code here uses
the widest vectors of the CPU the code is compiled for and fused multiply-adds: ``gemm``'s tile, and the
float32 activations that are the mixers' costliest row-wise work (``flat_map``: GELU, exp), about twice
as fast as the same formula in a Numba loop.
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
    """IR for vectors of one scalar type, in one intrinsic's ``codegen``."""

    def __init__(self, context, builder, scalar):
        self.builder, self.scalar = builder, scalar
        self.itemsize = context.get_abi_sizeof(scalar)
        self.lanes, self.tile_rows = lanes_and_rows(context, self.itemsize)
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
