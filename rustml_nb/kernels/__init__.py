"""Kernels: the arithmetic the model families share, as compiled functions over contiguous arrays.

``gemm`` is the matrix product every Linear runs, ``series`` scales series and cuts them into patches,
``rows`` holds the row-wise pieces (norms, activations, gates, residuals, transposes, pooling), ``attention``
softmax attention and ``heads`` the output heads; ``simd`` writes SIMD vectors in LLVM IR for gemm's tile, the
float32 activations, the softmax gate's single pass and the transposes' tiles. A family's own compiled code
(``models/<family>/forward.py``) calls these leaves directly.

Compile time is a user's first-run wait, and Numba re-optimizes a callee's code inside every caller that
links it: call graphs stay flat (a family's per-thread kernel calls the leaves directly), no kernel is
called with a constant argument (a literal gets its own compiled copy), and array-to-array slice
assignments, which pull in Numba's error-message formatting, are written as loops. Every kernel takes
its switches as plain numbers read at run time, so one compilation serves every checkpoint of a dtype.
"""
