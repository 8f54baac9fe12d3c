"""Execution paths of a faulty `SystolicArray.matmul`; each recomputes only the output elements
whose computation reads a faulty register value, in the PE accumulation order.

* `float_grid`: float arrays, permanent faults whose reach is a grid of local rows x columns.
* `float_positions`: float arrays, any other permanent reach.
* `integer_grid`: integer arrays, permanent faults whose reach is (nearly) a grid.
* `integer_delta`: integer arrays, one a/b fault that corrupts few of an element's products.
* `chunked`: windowed faults, and integer arrays without a better path (with
  `touched_elements`, which finds the elements and corrupted values these two recompute).

`operands` gathers the operand rows and columns the float paths read.
"""
