"""Small LLVM IR builders shared by the intrinsics that write vector code
directly (:mod:`fastlogits.cpu.blocks.microkernels`, :mod:`fastlogits.cpu.blocks.rowvec`, :mod:`.fastexp`).

Numba has no vector types, so a kernel that must keep sums in vector
registers, reduce across lanes or load a masked tail is written as an
``@intrinsic`` whose codegen builds the IR with these helpers. Indices are
i64 and flat (element offsets from an array's data pointer); nothing is
bounds-checked.
"""

from llvmlite import ir
from numba.core import cgutils

I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)


def i64(builder, v):
    """An integer IR value widened (sign-extended) to i64."""
    return builder.sext(v, I64) if v.type.width < 64 else v


def const(v):
    """An i64 constant."""
    return ir.Constant(I64, v)


def splat(builder, vec, v):
    """A vector of type ``vec`` with every lane ``v``."""
    undef = ir.Constant(vec, ir.Undefined)
    one = builder.insert_element(undef, v, ir.Constant(I32, 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(I32, vec.count),
                                                          [0] * vec.count))


def vector_of(ty, value):
    """A constant of the scalar or vector float type ``ty``, every lane ``value``."""
    if isinstance(ty, ir.VectorType):
        return ir.Constant(ty, [value] * ty.count)
    return ir.Constant(ty, value)


def element_ptr(context, builder, aty, aval, index):
    """Pointer to ``arr.flat[index]`` of the array value ``aval`` (Numba
    type ``aty``; ``index`` any integer IR value)."""
    data = context.make_array(aty)(context, builder, aval).data
    return builder.gep(data, [i64(builder, index)])


def vptr(builder, data, index, vec):
    """Pointer to the ``vec``-typed vector starting at ``data[index]``."""
    return builder.bitcast(builder.gep(data, [index]), vec.as_pointer())


def type_suffix(ty):
    """LLVM's overloaded-intrinsic suffix of a float or integer type: f32,
    v16f32, v8i32, ..."""
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{type_suffix(ty.element)}"
    if isinstance(ty, ir.IntType):
        return f"i{ty.width}"
    return {ir.HalfType(): "f16", ir.FloatType(): "f32"}.get(ty, "f64")


def intrinsic_fn(builder, name, ret, args):
    """Declare (once) and return the LLVM intrinsic ``name``."""
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


_FLOAT_OPS = frozenset(("fadd", "fsub", "fmul", "fdiv", "frem", "fcmp"))


def flag_block_from(builder, first, flags):
    """Give the float operations of the current block from instruction
    ``first`` on that carry no fast-math flags the ``flags``: Numba's
    fast-math pass adds the kernel's own flags only to instructions without
    any, so straight-line IR marked this way keeps e.g. ``EXP_FASTMATH``
    (no ``reassoc``) inside a ``FASTMATH`` kernel."""
    for ins in builder.block.instructions[first:]:
        if ins.opname in _FLOAT_OPS and not ins.flags:
            ins.flags.extend(sorted(flags))


def non_one(builder, e):
    """``e`` where it is not exactly 1.0, else 0 (scalar or vector): the
    term an exp-sum adds to its sum of the non-maximal terms (the max's
    ``exp(0)`` is exactly 1 in every exp form, :mod:`.fastexp`)."""
    one = builder.fcmp_ordered("==", e, vector_of(e.type, 1.0))
    return builder.select(one, vector_of(e.type, 0.0), e)


def rest_ir(builder, s, s1):
    """IR of :func:`fastlogits.cpu.blocks.tiles.rest`: ``s - 1`` where ``s >= 2``,
    else ``s1`` (scalar or vector)."""
    return builder.select(builder.fcmp_ordered(">=", s, vector_of(s.type, 2.0)),
                          builder.fsub(s, vector_of(s.type, 1.0)), s1)


def fmuladd(builder, a, b, c):
    """``a * b + c`` as ``llvm.fmuladd`` (an FMA where the target has one)."""
    fn = intrinsic_fn(builder, f"llvm.fmuladd.{type_suffix(a.type)}", a.type, [a.type] * 3)
    return builder.call(fn, [a, b, c])


def fmuladd_fn(builder, vec):
    """The ``llvm.fmuladd`` function of type ``vec`` (for many calls)."""
    return intrinsic_fn(builder, f"llvm.fmuladd.{type_suffix(vec)}", vec, [vec] * 3)


def lane_mask(builder, lanes, count):
    """``<lanes x i1>``: lane l is set where l < count (an i64 value)."""
    ivec = ir.VectorType(I32, lanes)
    iota = ir.Constant(ivec, list(range(lanes)))
    return builder.icmp_signed("<", iota, splat(builder, ivec, builder.trunc(count, I32)))


def _elem_size(ty):
    if isinstance(ty, ir.IntType):
        return ty.width // 8
    return {ir.HalfType(): 2, ir.FloatType(): 4}.get(ty, 8)


def masked_load(builder, data, index, mask, passthru):
    """Load the lanes of ``mask`` from ``data[index:]``; the others are
    ``passthru`` (a false lane reads no memory)."""
    vec = passthru.type
    size = _elem_size(vec.element)
    fn = intrinsic_fn(builder, f"llvm.masked.load.{type_suffix(vec)}.p0", vec,
                      [ir.PointerType(), I32, mask.type, vec])
    return builder.call(fn, [builder.gep(data, [index]), ir.Constant(I32, size), mask, passthru])


def masked_store(builder, value, data, index, mask):
    """Store the lanes of ``mask`` of ``value`` to ``data[index:]``."""
    vec = value.type
    size = _elem_size(vec.element)
    fn = intrinsic_fn(builder, f"llvm.masked.store.{type_suffix(vec)}.p0", ir.VoidType(),
                      [vec, ir.PointerType(), I32, mask.type])
    builder.call(fn, [value, builder.gep(data, [index]), ir.Constant(I32, size), mask])


def masked_gather(builder, data, index, mask, passthru):
    """Lane l: ``data[index[l]]`` where ``mask[l]``, else ``passthru[l]``
    (which reads no memory); ``index`` an i32 or i64 vector of element
    offsets from the pointer ``data``. With i32 offsets x86 loads the
    lanes by one ``vgatherdps`` (AVX-512: 16 float32; AVX2: 8)."""
    vec = passthru.type
    ptrs = builder.gep(data, [index], source_etype=vec.element)
    # llvmlite types a GEP of a vector of offsets as one pointer; LLVM's
    # is a vector of them, which the call's signature must say.
    ptrs.type = ir.VectorType(ir.PointerType(), vec.count)
    fn = intrinsic_fn(builder, f"llvm.masked.gather.{type_suffix(vec)}.v{vec.count}p0", vec,
                      [ptrs.type, I32, mask.type, vec])
    return builder.call(fn, [ptrs, ir.Constant(I32, _elem_size(vec.element)), mask, passthru])


def loop(builder, start, stop, step, init, body, name):
    """``values = body(k, values)`` for k = start, start + step, ... < stop
    (i64 values; ``step`` a Python int), from the IR values ``init``;
    returns the final values (``init`` when the range is empty). The
    carried values live in phi nodes, i.e. in registers."""
    entry = builder.block
    head = builder.append_basic_block(f"{name}.loop")
    done = builder.append_basic_block(f"{name}.done")
    builder.cbranch(builder.icmp_signed("<", start, stop), head, done)
    builder.position_at_end(head)
    k = builder.phi(I64)
    k.add_incoming(start, entry)
    carried = []
    for v in init:
        phi = builder.phi(v.type)
        phi.add_incoming(v, entry)
        carried.append(phi)
    new = body(k, carried)
    k1 = builder.add(k, const(step))
    end = builder.block
    k.add_incoming(k1, end)
    for phi, v in zip(carried, new):
        phi.add_incoming(v, end)
    builder.cbranch(builder.icmp_signed("<", k1, stop), head, done)
    builder.position_at_end(done)
    final = []
    for a, v in zip(init, new):
        phi = builder.phi(a.type)
        phi.add_incoming(a, entry)
        phi.add_incoming(v, end)
        final.append(phi)
    return final


def vector_loop(builder, init, stop, step, body, name):
    """:func:`loop` from k = 0."""
    return loop(builder, const(0), stop, step, init, body, name)
