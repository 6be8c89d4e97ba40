"""A register-blocked GEMM micro-kernel for the per-step recurrent products, written as LLVM vector IR.

The recurrent product of one time step is small (B/2 rows of h against W_hh) and runs T times per
chunk; calling BLAS for it from Python costs a call, a repacking of the whole W_hh inside OpenBLAS on
every call, and another pass over the gates afterwards. Here W_hh is packed once per pass into panels
(`pack_panels`) and the step kernels of lstm.py / gru.py / rnn.py call this micro-kernel on one block
of MR rows by one panel of NR columns, then apply the gate arithmetic to the result while it is still
in L1.

Numba has no vector types, and its auto-vectorizer does not keep an MR x NR block of accumulators in
registers across the k loop (it reloads and stores them every k: measured at ~1/2 the FMA rate). So the
micro-kernel is an `@intrinsic` that emits the loop itself: MR accumulators of type <NR x float>, one
vector load of the panel row and one broadcast of h[r, k] per row and k, and `llvm.fma`. LLVM lowers
<NR x float> to whatever the CPU has: zmm registers with AVX-512, pairs of ymm with AVX2 (see
docs/architecture.md for the machine code checked on both kinds of machine).

Sizes: K = inner dimension, NR = panel width (columns), MR = rows per block.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .jit import kernel

_CACHE: dict[tuple[int, int], object] = {}


def micro_kernel(MR: int, NR: int):
    """The intrinsic `mk(a_addr, lda, w_addr, K, c_addr, ldc)`, for fixed MR and NR.

    a_addr: address of A[0, 0] (float32, rows lda elements apart; reads A[r, k] for r < MR, k < K).
    w_addr: address of one packed panel (K, NR) float32, contiguous, row k at w + k*NR.
    c_addr: address of C[0, 0] (rows ldc elements apart); C[r, :NR] = sum_k A[r, k] * W[k, :].
    All addresses are plain integers (array.ctypes.data + offsets); the caller checks every extent."""
    key = (MR, NR)
    if key in _CACHE:
        return _CACHE[key]

    @intrinsic
    def mk(typingctx, a_addr, lda, w_addr, K, c_addr, ldc):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            a_i, lda_v, w_i, k_v, c_i, ldc_v = args
            f32 = ir.FloatType()
            vt = ir.VectorType(f32, NR)
            i64 = ir.IntType(64)
            i32 = ir.IntType(32)
            pf = f32.as_pointer()
            pv = vt.as_pointer()
            a = builder.inttoptr(a_i, pf)
            w = builder.inttoptr(w_i, pf)
            c = builder.inttoptr(c_i, pf)
            rows = [builder.gep(a, [builder.mul(lda_v, ir.Constant(i64, r))]) for r in range(MR)]
            crow = [builder.gep(c, [builder.mul(ldc_v, ir.Constant(i64, r))]) for r in range(MR)]
            zero = ir.Constant(vt, None)
            undef = ir.Constant(vt, ir.Undefined)
            splat_mask = ir.Constant(ir.VectorType(i32, NR), [0] * NR)
            fma_name = f"llvm.fma.v{NR}f32"
            fma = builder.module.globals.get(fma_name) or ir.Function(
                builder.module, ir.FunctionType(vt, [vt, vt, vt]), name=fma_name)
            entry = builder.block
            loop = builder.append_basic_block("mk.loop")
            done = builder.append_basic_block("mk.done")
            builder.cbranch(builder.icmp_signed(">", k_v, ir.Constant(i64, 0)), loop, done)

            builder.position_at_end(loop)
            k = builder.phi(i64)
            acc = [builder.phi(vt) for _ in range(MR)]
            wv = builder.load(builder.bitcast(builder.gep(w, [builder.mul(k, ir.Constant(i64, NR))]), pv), align=4)
            new = []
            for r in range(MR):
                s = builder.load(builder.gep(rows[r], [k]), align=4)
                sv = builder.shuffle_vector(builder.insert_element(undef, s, ir.Constant(i32, 0)), undef, splat_mask)
                new.append(builder.call(fma, [sv, wv, acc[r]]))
            k1 = builder.add(k, ir.Constant(i64, 1))
            k.add_incoming(ir.Constant(i64, 0), entry)
            k.add_incoming(k1, loop)
            for r in range(MR):
                acc[r].add_incoming(zero, entry)
                acc[r].add_incoming(new[r], loop)
            builder.cbranch(builder.icmp_signed("<", k1, k_v), loop, done)

            builder.position_at_end(done)
            outs = [builder.phi(vt) for _ in range(MR)]  # all phis first: LLVM wants them grouped
            for r, out in enumerate(outs):
                out.add_incoming(zero, entry)
                out.add_incoming(new[r], loop)
            for r, out in enumerate(outs):
                builder.store(out, builder.bitcast(crow[r], pv), align=4)
            return context.get_dummy_value()

        return sig, codegen

    _CACHE[key] = mk
    return mk


def _host_has_avx512() -> bool:
    try:
        from llvmlite import binding as llvm
        return "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")
    except Exception:  # noqa: BLE001 - any failure: take the AVX2-sized block, correct everywhere
        return False


# Block shape by register file: AVX-512 has 32 zmm registers, so 8 rows x 32 columns (16 accumulators,
# 2 panel vectors, a broadcast) fit; AVX2 has 16 ymm registers: 6 rows x 16 columns (12 accumulators).
# Measured here (Xeon, AVX-512, one core, 32x256 . 256x1024): 8x32 74 GFLOP/s, 8x16 58, numpy 48.
MR, NR = (8, 32) if _host_has_avx512() else (6, 16)
_MK = micro_kernel(MR, NR)
_MK4 = micro_kernel(4, NR)
_MK2 = micro_kernel(2, NR)
_MK1 = micro_kernel(1, NR)


def padded(n: int) -> int:
    """n rounded up to whole panels: the width of the scratch buffer `panel_product` writes."""
    return -(-n // NR) * NR


def pack(w: np.ndarray) -> np.ndarray:
    """Panels (P, K, NR) of w (K, N) for panel_product; columns past N are zero (their results unused)."""
    K, N = w.shape
    out = np.zeros((padded(N) // NR, K, NR), np.float32)
    _pack_cols(out, np.ascontiguousarray(w, dtype=np.float32))
    return out


@kernel
def _pack_cols(out, w):
    P, K, nr = out.shape
    N = w.shape[1]
    for p in range(P):
        for k in range(K):
            for j in range(nr):
                if p * nr + j < N:
                    out[p, k, j] = w[k, p * nr + j]


@kernel
def panel_product(a, wp, c):
    """c[:, :P*NR] = a @ W for a (B, K) C-contiguous float32, wp = pack(W) (P, K, NR), c (B, >= P*NR)
    C-contiguous. Panels outer, row blocks inner: each panel is read from memory once per call and
    reused from L1 by every block of rows."""
    B, K = a.shape
    P = wp.shape[0]
    ldc = c.shape[1]
    aa = a.ctypes.data
    ca = c.ctypes.data
    wa = wp.ctypes.data
    for p in range(P):
        w_p = wa + p * K * NR * 4
        c_p = ca + p * NR * 4
        b = 0
        while B - b >= MR:
            _MK(aa + b * K * 4, K, w_p, K, c_p + b * ldc * 4, ldc)
            b += MR
        if B - b >= 4:
            _MK4(aa + b * K * 4, K, w_p, K, c_p + b * ldc * 4, ldc)
            b += 4
        if B - b >= 2:
            _MK2(aa + b * K * 4, K, w_p, K, c_p + b * ldc * 4, ldc)
            b += 2
        if B - b >= 1:
            _MK1(aa + b * K * 4, K, w_p, K, c_p + b * ldc * 4, ldc)
