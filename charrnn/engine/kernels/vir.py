"""LLVM vector IR for the recurrent kernels: the register-blocked product loop and float32 tanh on vectors.

Numba has no vector types, and its auto-vectorizer neither keeps an MR x NR block of accumulators in
registers across the k loop (it reloads and stores them every k) nor uses 512-bit registers for plain
loops (LLVM prefers 256-bit vectors on these CPUs). So the hot loops are `@intrinsic`s that emit LLVM IR
on <NR x float> values directly; LLVM lowers them to zmm registers with AVX-512 and to ymm pairs with
AVX2 (docs/architecture.md records the machine code checked here).

Every intrinsic takes plain integer addresses (`array.ctypes.data` + byte offsets) and element strides;
the jitted function that calls it computes them and the Python function above that checks every shape,
dtype and contiguity once.
"""
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .activations import (_A1, _A3, _A5, _A7, _A9, _A11, _A13, _B0, _B2, _B4, _B6, _CLAMP)

I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()


class Vec:
    """IR helpers for <n x float> values in one function being built."""

    def __init__(self, builder: ir.IRBuilder):
        self.b = builder

    def ptr(self, addr, offset=None):
        """float* at the integer address `addr` (+ `offset` elements, an IR i64 or a Python int)."""
        p = self.b.inttoptr(addr, F32.as_pointer())
        if offset is None:
            return p
        if isinstance(offset, int):
            offset = ir.Constant(I64, offset)
        return self.b.gep(p, [offset])

    def i64(self, x: int):
        return ir.Constant(I64, x)

    def load(self, p, n: int):
        return self.b.load(self.b.bitcast(p, ir.VectorType(F32, n).as_pointer()), align=4)

    def store(self, v, p):
        self.b.store(v, self.b.bitcast(p, v.type.as_pointer()), align=4)

    def prefetch(self, p, write: bool = False):
        """Ask for the 64-byte line holding float* p in L1 (llvm.prefetch; a hint, never a fault)."""
        i8p = ir.IntType(8).as_pointer()
        fn = self.b.module.globals.get("llvm.prefetch.p0i8") or ir.Function(
            self.b.module, ir.FunctionType(ir.VoidType(), [i8p, I32, I32, I32]), name="llvm.prefetch.p0i8")
        self.b.call(fn, [self.b.bitcast(p, i8p), ir.Constant(I32, int(write)), ir.Constant(I32, 3),
                         ir.Constant(I32, 1)])

    def prefetch_span(self, p, floats: int, write: bool = False):
        """Prefetch every line of floats p[0:floats] (p need not be line-aligned)."""
        for off in range(0, floats + 15, 16):
            self.prefetch(self.b.gep(p, [ir.Constant(I64, min(off, floats - 1))]), write)

    def prefetch_rows(self, rows: int, spans):
        """Prefetch, for each row r < rows, every span (addr, stride, floats, write): floats addr[r*stride:]
        ... (the scattered rows a fused epilogue will touch, asked for before its K loop)."""
        for r in range(rows):
            for addr, stride, floats, write in spans:
                self.prefetch_span(self.ptr(addr, self.b.mul(stride, self.i64(r))), floats, write)

    def splat(self, x: float, n: int):
        return ir.Constant(ir.VectorType(F32, n), [float(x)] * n)

    def const(self, xs):
        return ir.Constant(ir.VectorType(F32, len(xs)), [float(x) for x in xs])

    def broadcast(self, s, n: int):
        vt = ir.VectorType(F32, n)
        undef = ir.Constant(vt, ir.Undefined)
        one = self.b.insert_element(undef, s, ir.Constant(I32, 0))
        return self.b.shuffle_vector(one, undef, ir.Constant(ir.VectorType(I32, n), [0] * n))

    def fma(self, a, b, c):
        n = a.type.count
        name = f"llvm.fma.v{n}f32"
        fn = self.b.module.globals.get(name) or ir.Function(
            self.b.module, ir.FunctionType(a.type, [a.type] * 3), name=name)
        return self.b.call(fn, [a, b, c])

    def add(self, a, b):
        return self.b.fadd(a, b)

    def sub(self, a, b):
        return self.b.fsub(a, b)

    def mul(self, a, b):
        return self.b.fmul(a, b)

    def concat(self, parts):
        """One vector from equal-length parts, in order (lengths a power-of-two count of parts)."""
        while len(parts) > 1:
            n = parts[0].type.count
            mask = ir.Constant(ir.VectorType(I32, 2 * n), list(range(2 * n)))
            parts = [self.b.shuffle_vector(parts[i], parts[i + 1], mask) for i in range(0, len(parts), 2)]
        return parts[0]

    def part(self, v, start: int, n: int):
        undef = ir.Constant(v.type, ir.Undefined)
        return self.b.shuffle_vector(v, undef, ir.Constant(ir.VectorType(I32, n), list(range(start, start + n))))

    def tanh(self, x):
        """Eigen's [13/6] rational float32 tanh, the same formula as activations.tanh (error < 1e-6).
        The clamp is written as compare + select so a NaN passes through (the divergence guard needs it)."""
        n = x.type.count
        c = self.splat(_CLAMP, n)
        nc = self.splat(-_CLAMP, n)
        x = self.b.select(self.b.fcmp_ordered(">", x, c), c, x)
        x = self.b.select(self.b.fcmp_ordered("<", x, nc), nc, x)
        x2 = self.mul(x, x)
        p = self.fma(x2, self.splat(_A13, n), self.splat(_A11, n))
        for a in (_A9, _A7, _A5, _A3, _A1):
            p = self.fma(x2, p, self.splat(a, n))
        p = self.mul(x, p)
        q = self.fma(x2, self.splat(_B6, n), self.splat(_B4, n))
        for bb in (_B2, _B0):
            q = self.fma(x2, q, self.splat(bb, n))
        return self.b.fdiv(p, q)


def emit_product(v: Vec, MR: int, NR: int, a_addr, lda, w_addr, K, piece: int | None = None):
    """Emit acc[r] = sum_{k<K} A[r, k] * W[k, :] for r < MR as <NR x float> values (zeros when K <= 0).
    A rows are lda elements apart; W is one packed panel, K-major, row k at w + k*NR.

    With `piece`, acc[r] is instead a list of NR/piece <piece x float> values (columns piece*j ...):
    for a panel width that is not a power of two (GRU's 48 columns = 3 x 16), whose one-vector form
    LLVM legalizes into element-by-element inserts and spills."""
    b = v.b
    n = NR // piece if piece else 1
    width = piece or NR
    vt = ir.VectorType(F32, width)
    rows = [v.ptr(a_addr, b.mul(lda, v.i64(r))) for r in range(MR)]
    w = v.ptr(w_addr)
    zero = ir.Constant(vt, None)
    entry = b.block
    loop = b.append_basic_block("mk.loop")
    done = b.append_basic_block("mk.done")
    b.cbranch(b.icmp_signed(">", K, v.i64(0)), loop, done)

    b.position_at_end(loop)
    k = b.phi(I64)
    acc = [[b.phi(vt) for _ in range(n)] for _ in range(MR)]
    wk = b.gep(w, [b.mul(k, v.i64(NR))])
    wv = [v.load(b.gep(wk, [v.i64(j * width)]), width) for j in range(n)]
    new = []
    for r in range(MR):
        x = v.broadcast(b.load(b.gep(rows[r], [k]), align=4), width)
        new.append([v.fma(x, wv[j], acc[r][j]) for j in range(n)])
    k1 = b.add(k, v.i64(1))
    k.add_incoming(v.i64(0), entry)
    k.add_incoming(k1, loop)
    for r in range(MR):
        for j in range(n):
            acc[r][j].add_incoming(zero, entry)
            acc[r][j].add_incoming(new[r][j], loop)
    b.cbranch(b.icmp_signed("<", k1, K), loop, done)

    b.position_at_end(done)
    outs = [[b.phi(vt) for _ in range(n)] for _ in range(MR)]  # all phis first: LLVM wants them grouped
    for r in range(MR):
        for j in range(n):
            outs[r][j].add_incoming(zero, entry)
            outs[r][j].add_incoming(new[r][j], loop)
    return outs if piece else [o[0] for o in outs]


def vector_intrinsic(nargs: int, body):
    """An @intrinsic of `nargs` intp arguments returning nothing, whose IR `body(v, args)` emits."""

    def impl(typingctx, *args):
        sig = types.void(*([types.intp] * nargs))

        def codegen(context, builder, signature, llargs):
            body(Vec(builder), list(llargs))
            return context.get_dummy_value()

        return sig, codegen

    # numba inspects the typer's parameters: give it exactly nargs named ones.
    names = [f"a{i}" for i in range(nargs)]
    src = f"def typer(typingctx, {', '.join(names)}):\n    return impl(typingctx, {', '.join(names)})\n"
    scope = {"impl": impl}
    exec(src, scope)  # noqa: S102 - a fixed signature template, no user input
    return intrinsic(scope["typer"])


def row_block_intrinsic(nargs: int, body, max_rows: int):
    """An @intrinsic `blk(rows, *args)` of 1 + `nargs` intp arguments: a switch on `rows` (1..max_rows;
    anything else does nothing) over the IR `body(v, args, rows)` emits for each fixed row count. One
    entry point lets a jitted loop cut B rows into balanced blocks (B = 25, MR = 8: 7+6+6+6 instead of
    8+8+8+1, whose one-row block runs at a quarter of the FMA rate: its two accumulators form a chain
    of dependent FMAs) without an if-chain over separately compiled kernels."""

    def full(v, args):
        rows, rest = args[0], args[1:]
        b = v.b
        end = b.append_basic_block("rows.end")
        sw = b.switch(rows, end)
        for r in range(1, max_rows + 1):
            case = b.append_basic_block(f"rows.{r}")
            sw.add_case(ir.Constant(I64, r), case)
            b.position_at_end(case)
            body(v, rest, r)
            b.branch(end)
        b.position_at_end(end)

    return vector_intrinsic(nargs + 1, full)
