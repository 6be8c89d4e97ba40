"""Private Numba kernels. Callers validate shapes and dtypes; kernels assume clean input."""
