"""BLAS runs single-threaded while ``kernels.encode``'s threads call it.

``encode`` already keeps every core busy with its own block of rows; a BLAS that also started threads
for each call would have them fight ours for the same cores (batch 1 of the granite shape: 25 ms median
instead of 3 ms). So for the length of a forward pass every BLAS library loaded in the process (SciPy's,
which Numba's ``np.dot`` calls, and NumPy's) is set to one thread, and then set back, through
threadpoolctl's handles on them (a ctypes call each, about a microsecond). The libraries are listed once,
at the first forward pass; one loaded later is left alone.
"""

from __future__ import annotations

from contextlib import contextmanager

import scipy.linalg.cython_blas  # noqa: F401  the BLAS Numba's np.dot calls: loaded before libraries are listed
from threadpoolctl import ThreadpoolController

_blas_libraries = None


def _blas():
    global _blas_libraries
    if _blas_libraries is None:
        _blas_libraries = [library for library in ThreadpoolController().lib_controllers
                           if library.user_api == "blas"]
    return _blas_libraries


@contextmanager
def single_threaded_blas():
    """Every loaded BLAS on one thread inside the block, as it was after."""
    libraries = _blas()
    previous = [library.get_num_threads() for library in libraries]
    for library in libraries:
        library.set_num_threads(1)
    try:
        yield
    finally:
        for library, threads in zip(libraries, previous):
            library.set_num_threads(threads)
