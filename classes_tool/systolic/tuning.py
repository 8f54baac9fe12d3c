"""Tuning knobs of the fast paths of `SystolicArray.matmul`.

Results never depend on them; tests vary them to force each path. The paths read them from this
module at call time (``tuning.GRID_MAX_WASTE``), so setting an attribute here takes effect at once.
"""

GRID_MAX_WASTE = 4  # use a grid path while its box is at most this many times the reach
PRODUCT_BLOCK = 1 << 16  # integer grid: blocks up to this many sums compute all products at once
STEP_BLOCK = 1 << 14  # float paths: partial sums per block of elements
BLAS_MIN = 1 << 11  # float grid: blocks with fewer sums form all their products with NumPy
TRANSPOSE_BLOCK = 1 << 13  # elements per block of a cache-friendly transpose
PLAN_CACHE = 64  # cached index plans per array (one per fault set and shape)
WORKSPACE_MAX = 1 << 20  # bytes of sum/product buffers a plan may keep for its next call
