"""A cache-prefetch hint for numba kernels (LLVM's ``llvm.prefetch``).

Hardware prefetchers follow a stream within one 4 KB page.  A kernel that
walks a small box of a large image touches a new page with every image
row (a 2M-like frame's rows are 5.9 KB apart), so each row is a cache
miss that the kernel waits for; asking for a few rows ahead lets those
misses overlap.  A hint changes no result and never faults, whatever the
address.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_READ = ir.Constant(ir.IntType(32), 0)
_KEEP_IN_ALL_LEVELS = ir.Constant(ir.IntType(32), 3)
_DATA_CACHE = ir.Constant(ir.IntType(32), 1)


@intrinsic
def prefetch(typingctx, array, row, column):
    """Hint that ``array[row, column]`` (a 2-D array) will be read soon; no bounds are checked."""
    if not (isinstance(array, types.Array) and array.ndim == 2):
        return None

    def codegen(context, builder, signature, arguments):
        array_type = signature.args[0]
        handle = context.make_array(array_type)(context, builder, arguments[0])
        indices = [context.cast(builder, value, kind, types.intp)
                   for value, kind in zip(arguments[1:], signature.args[1:])]
        pointer = cgutils.get_item_pointer2(context, builder, handle.data, cgutils.unpack_tuple(builder, handle.shape),
                                            cgutils.unpack_tuple(builder, handle.strides), array_type.layout, indices)
        byte_pointer = ir.IntType(8).as_pointer()
        hint = builder.module.declare_intrinsic(
            "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [byte_pointer] + [ir.IntType(32)] * 3))
        builder.call(hint, [builder.bitcast(pointer, byte_pointer), _READ, _KEEP_IN_ALL_LEVELS, _DATA_CACHE])
        return context.get_dummy_value()

    return types.void(array, row, column), codegen
