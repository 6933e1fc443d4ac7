"""BLAS runs single-threaded while ``kernels.encode``'s threads call it.

``encode`` already keeps every core busy with its own block of rows; a BLAS that also started its own
threads for each call would have them fight for the same cores (or, in OpenBLAS, take turns on one lock).
The BLAS Numba calls is SciPy's; its thread count is set to 1 for the duration of a forward pass and then
restored, through threadpoolctl's handles on the loaded libraries (a ctypes call, under a microsecond).
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
