"""Sequential PE sums of a block of output elements with their c faults, as the float
permanent-fault paths run them: products per step, added in PE order, c faults applied in place."""

from __future__ import annotations

import numpy as np

from classes_tool.systolic.faults import Fault, FixedValue, StuckAt


class PartialSums:
    """Sequential PE sums of one block of elements, with the c faults prepared once.

    `run`: the products of each step (rounded to the accumulator dtype) come in the layout
    of the sums. Each step adds its products (no fused multiply-add); a c fault corrupts the
    partial sums it hits (`c_hits[kk]`) after that step; the tile results are added from +0
    in inner-tile order into `out`.

    BLAS products: ``coef @ vec`` where each row of coef has one non-zero entry; with finite
    vec each output is one rounded product plus exact zeros, i.e. the product itself up to
    the sign of a zero result. That sign cannot change a sum that is not -0, and a partial
    sum starts at +0 and becomes -0 only by adding -0 to -0 or by a c fault, so while some
    partial sum is -0 the step forms its products with NumPy instead. Without c faults no
    partial sum is ever -0.

    The partial sums `c` are a buffer of the caller (a `Workspace` one); the c faults'
    in-place actions are bound to it, so one instance serves every call of its plan.
    """

    def __init__(self, c: np.ndarray, c_hits, mac: np.dtype) -> None:
        self.c, self.mac = c, mac
        integer = mac.kind == "i"
        work = c.dtype
        # c faults as prepared in-place actions, each with the partial sums to look for -0 in
        actions: list[list] = [[] for _ in c_hits]
        prepared: dict = {}
        for kk, hits in enumerate(c_hits):
            for hit in hits:
                if id(hit) not in prepared:
                    f, idx, view, check = hit
                    if integer:
                        def act(f=f, idx=idx):
                            c[idx] = f.corrupt(c[idx].astype(mac)).astype(work)
                    elif view:
                        act = f.corrupter(c[idx])
                    else:
                        def act(f=f, idx=idx):
                            c[idx] = f.corrupt(c[idx])
                    watch = (c[idx] if view else idx) if check else None
                    prepared[id(hit)] = (act, watch)
                actions[kk].append(prepared[id(hit)])
        self.actions = actions
        self.plain = not any(actions)

    def run(self, kk_order, tile_axis: int, out: np.ndarray, steps: np.ndarray | None = None,
            blas: tuple | None = None) -> None:
        """The sums (see the class) of the products ``steps[kk]`` (NumPy, exact) or, with
        `blas` = (coefs, vecs, prod, a_op, b_op), of ``coefs[kk] @ vecs[kk]`` into `prod`
        (``a_op[kk] * b_op[kk]`` into `prod` while some partial sum is -0)."""
        c = self.c
        c.fill(0)
        add, matmul, multiply = np.add, np.matmul, np.multiply
        if blas is not None:
            coefs, vecs, prod, a_op, b_op = blas
            flat = prod.reshape(-1, prod.shape[-1])
        if self.plain and blas is not None:  # the common case, as a tight loop
            for kk in kk_order:
                matmul(coefs[kk], vecs[kk], out=flat)
                add(c, prod, out=c)
        elif self.plain:
            for kk in kk_order:
                add(c, steps[kk], out=c)
        else:
            actions = self.actions
            negative_zero = False
            for kk in kk_order:
                if blas is None:
                    add(c, steps[kk], out=c)
                else:
                    if negative_zero:
                        multiply(a_op[kk], b_op[kk], out=prod)
                    else:
                        matmul(coefs[kk], vecs[kk], out=flat)
                    add(c, prod, out=c)
                    if negative_zero:
                        negative_zero = has_negative_zero(c)
                for act, watch in actions[kk]:
                    act()
                    if watch is not None and blas is not None and not negative_zero:
                        negative_zero = has_negative_zero(c[watch] if isinstance(watch, tuple)
                                                           else watch)
        mac = self.mac
        if mac.kind == "i":
            out[...] = c.sum(axis=tile_axis).astype(mac)  # modular: tile order is irrelevant
            return
        tiles = c if tile_axis == 0 else np.moveaxis(c, tile_axis, 0)
        add(tiles[0], mac.type(0), out=out)  # from +0: a -0 tile result gives +0
        for tile in range(1, len(tiles)):
            add(out, tiles[tile], out=out)


SIGN_BITS = {2: np.uint16(1 << 15), 4: np.uint32(1 << 31), 8: np.uint64(1 << 63)}


def has_negative_zero(values: np.ndarray) -> bool:
    """True when some float value is -0 (its bit pattern is the sign bit alone)."""
    sign = SIGN_BITS[values.dtype.itemsize]
    return bool(np.any(values.view(f"u{values.dtype.itemsize}") == sign))


def c_fault_hit(fault: Fault, idx: tuple, dtype: np.dtype, seen: dict) -> tuple:
    """(fault, index, whether the index is a view, whether the fault can make a -0 sum).

    The same hit at several steps is the same tuple (found in `seen`), so the step loop
    prepares its in-place action once.
    """
    key = (fault, *((i.start, i.stop) if isinstance(i, slice) else i.tobytes() for i in idx))
    if key in seen:
        return seen[key]
    nbits = dtype.itemsize * 8
    never = ((isinstance(fault, StuckAt) and int(fault.polarity) == 1
              and int(fault.bit) != nbits - 1)  # a set non-sign bit: never a zero
             or (isinstance(fault, FixedValue) and not (fault.value == 0
                                                        and np.signbit(fault.value))))
    hit = fault, idx, all(isinstance(i, slice) for i in idx), dtype.kind == "f" and not never
    seen[key] = hit
    return hit
