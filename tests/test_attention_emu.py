"""Attention's AVX-512 inner loops on any machine: tr_attention_variant with
the AVX-512 loops runs under an emulated CPU that has AVX-512
(tests/x86emu.py: Bochs's Sapphire Rapids model), on one thread (a pool of
one runs the work in the calling thread, and its scratch, grown by a native
call first, is reused: no system call under emulation), and must write,
bit for bit, what the AVX2 loops write natively, and what the scalar
reference writes where src/ops/test_attention.c says those agree (halves or
quantized entries with TR_ATTN_HALF_P).

The loops are also run one at a time (tr_attention_loop), where every bit
of their outputs shows, not only what the softmax and the weights rounded to
halves let through.

Cases: the normalised-weights path (the forward pass's), F32, F16, Q8_0,
Q4_0 and TQ2_32 caches, head sizes the models use (64, 128, 256) and ragged
ones, GQA groups of 1 to 8 heads, prompt and decode, 1 to a few hundred
positions through block tables of several block sizes (runs cut at block
ends), and a cache whose last row ends before an unmapped page.

Run as a script with --count, it prints the emulated instruction counts of
one decode token (Gemma 3 270M's attention: 4 query heads, 1 KV head, head
size 256) over 2048 positions, AVX2 against AVX-512 (docs/BENCHMARKS.md)."""
import ctypes
import mmap
import os
import random
import struct
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import x86emu  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.environ.get("TRINITY_LIB", os.path.join(ROOT, "build", "libtrinity.so"))

ISA_SCALAR, ISA_AVX2, ISA_AVX512 = 0, 1, 2
F32, F16, Q4_0, Q8_0, TQ2_32 = 0, 1, 2, 8, 64
NAMES = {F32: "F32", F16: "F16", Q4_0: "Q4_0", Q8_0: "Q8_0", TQ2_32: "TQ2_32"}
HALF_Q, HALF_P = 1, 2
I32P = ctypes.POINTER(ctypes.c_int32)


class AttnParams(ctypes.Structure):  # tr_attn_params (src/ops/ops.h)
    _fields_ = [("n_tokens", ctypes.c_int), ("n_kv", ctypes.c_int), ("head_dim", ctypes.c_int),
                ("n_head", ctypes.c_int), ("n_head_kv", ctypes.c_int), ("head_dim_v", ctypes.c_int),
                ("k_type", ctypes.c_int), ("v_type", ctypes.c_int), ("k_stride", ctypes.c_size_t),
                ("v_stride", ctypes.c_size_t), ("q_pos", I32P), ("kv_pos", I32P), ("q_seq", I32P),
                ("kv_seq", I32P), ("window", ctypes.c_int), ("scale", ctypes.c_float),
                ("softcap", ctypes.c_float), ("n_seq", ctypes.c_int), ("block_size", ctypes.c_int),
                ("max_blocks", ctypes.c_int), ("blocks", I32P), ("flags", ctypes.c_uint)]


def open_lib():
    lib = ctypes.CDLL(LIB)
    lib.tr_attention_variant.restype = ctypes.c_int
    lib.tr_attention_variant.argtypes = [ctypes.c_void_p, ctypes.POINTER(AttnParams), ctypes.c_void_p,
                                         ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.tr_row_size.restype = ctypes.c_size_t
    lib.tr_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.tr_quantize.restype = ctypes.c_int
    lib.tr_quantize.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.tr_pool_new.restype = ctypes.c_void_p
    lib.tr_pool_new.argtypes = [ctypes.c_int]
    lib.tr_pool_free.argtypes = [ctypes.c_void_p]
    lib.tr_cpu_describe.restype = ctypes.c_char_p
    return lib


@pytest.fixture(scope="module")
def lib():
    if not os.path.exists(LIB):
        pytest.fail(f"{LIB} is missing: build first")
    return open_lib()


@pytest.fixture(scope="module")
def emu():
    why = x86emu.unavailable()
    if why:
        pytest.skip(f"no x86 emulator: {why}")
    return x86emu.Emulator()


@pytest.fixture(scope="module")
def pool(lib):
    p = lib.tr_pool_new(1)
    yield p
    lib.tr_pool_free(p)


def rows_bytes(lib, typ, n_rows, n_heads, dim, rng):
    """n_rows rows of n_heads heads of random entries of typ, packed."""
    out = bytearray()
    vals = (ctypes.c_float * dim)()
    hb = lib.tr_row_size(typ, dim)
    dst = ctypes.create_string_buffer(hb)
    for _ in range(n_rows * n_heads):
        xs = [rng.uniform(-1, 1) for _ in range(dim)]
        if typ == F32:
            out += struct.pack(f"<{dim}f", *xs)
        elif typ == F16:
            out += struct.pack(f"<{dim}e", *xs)
        else:
            vals[:] = xs
            assert lib.tr_quantize(typ, vals, dst, dim) == 0
            out += dst.raw
    return bytes(out)


class Case:
    """An attention call's inputs, kept alive with their buffers. The K and
    V pools end where a page that is not mapped begins (guard=True), so a
    read past the last row faults under the emulator."""

    def __init__(self, lib, rng, *, n_tokens, n_kv, d, dv, n_head, n_head_kv, k_type, v_type, bs, n_seq,
                 flags=HALF_Q | HALF_P, guard=False, decode_last=False):
        self.keep = []
        p = AttnParams()
        p.n_tokens, p.n_kv, p.head_dim, p.head_dim_v = n_tokens, n_kv, d, dv
        p.n_head, p.n_head_kv, p.k_type, p.v_type = n_head, n_head_kv, k_type, v_type
        p.k_stride = n_head_kv * lib.tr_row_size(k_type, d)
        p.v_stride = n_head_kv * lib.tr_row_size(v_type, dv)
        p.scale = 3.0 / d ** 0.5  # sharper than a model's, as test_attention.c
        p.flags = flags
        if n_seq:
            p.n_seq, p.block_size, p.max_blocks = n_seq, bs, (n_kv + bs - 1) // bs
            n_blocks = n_seq * p.max_blocks
            perm = list(range(n_blocks))
            rng.shuffle(perm)
            p.blocks = self.ints(perm)
            slots = n_blocks * bs
        else:
            slots = n_kv
        if decode_last:  # one token per sequence at its last position: every slot is read
            q_seq = [t % max(n_seq, 1) for t in range(n_tokens)]
            q_pos = [n_kv - 1 - t // max(n_seq, 1) for t in range(n_tokens)]
        else:
            pairs = rng.sample([(s, i) for s in range(max(n_seq, 1)) for i in range(n_kv)], n_tokens)
            q_seq, q_pos = [s for s, _ in pairs], [i for _, i in pairs]
        p.q_pos = self.ints(q_pos)
        if n_seq:
            p.q_seq = self.ints(q_seq)
        self.p = p
        self.k = self.place(rows_bytes(lib, k_type, slots, n_head_kv, d, rng), guard)
        self.v = self.place(rows_bytes(lib, v_type, slots, n_head_kv, dv, rng), guard)
        nq = n_tokens * n_head * d
        self.q = (ctypes.c_float * nq)(*[rng.uniform(-1, 1) for _ in range(nq)])
        self.n_out = n_tokens * n_head * dv

    def ints(self, xs):
        a = (ctypes.c_int32 * max(len(xs), 1))(*xs)
        self.keep.append(a)
        return ctypes.cast(a, I32P)

    def place(self, data, guard):
        keep, addr = buffer(data, guard)
        self.keep.append(keep)
        return addr

    def run_native(self, lib, pool, isa):
        out = (ctypes.c_float * self.n_out)()
        assert lib.tr_attention_variant(pool, ctypes.byref(self.p), self.q, self.k, self.v, out, isa) == 0
        return bytes(out)

    def run_emulated(self, lib, emu, pool, isa, count=None):
        out = (ctypes.c_float * self.n_out)()
        fn = ctypes.cast(lib.tr_attention_variant, ctypes.c_void_p).value
        st = emu.call(fn, pool, ctypes.addressof(self.p), ctypes.addressof(self.q), self.k, self.v,
                      ctypes.addressof(out), isa, count=count)
        assert ctypes.c_int32(st & 0xFFFFFFFF).value == 0
        return bytes(out)

    def bitwise_with_scalar(self):
        """As test_attention.c's `bitwise`: the scalar reference's bits too."""
        p = self.p
        return bool(p.flags & HALF_P) and (p.k_type not in (F32, F16) or (bool(p.flags & HALF_Q) and p.k_type == F16)) \
            and p.v_type != F32

    def describe(self):
        p = self.p
        return (f"{NAMES[p.k_type]}/{NAMES[p.v_type]} tokens={p.n_tokens} kv={p.n_kv} d={p.head_dim}/{p.head_dim_v} "
                f"heads={p.n_head}/{p.n_head_kv} seqs={p.n_seq} block={p.block_size} flags={p.flags}")


def first_diff(a, b):
    fa, fb = struct.unpack(f"<{len(a) // 4}f", a), struct.unpack(f"<{len(b) // 4}f", b)
    i = next(i for i in range(len(fa)) if struct.pack("<f", fa[i]) != struct.pack("<f", fb[i]))
    return f"[{i}] {fa[i]!r} vs {fb[i]!r}"


def check(lib, emu, pool, case):
    avx2 = case.run_native(lib, pool, ISA_AVX2)  # also grows the pool's scratch for the emulated call
    got = case.run_emulated(lib, emu, pool, ISA_AVX512)
    assert got == avx2, f"{case.describe()}: AVX-512 differs from AVX2 at {first_diff(got, avx2)}"
    if case.bitwise_with_scalar():
        ref = case.run_native(lib, pool, ISA_SCALAR)
        assert got == ref, f"{case.describe()}: AVX-512 differs from the scalar reference at {first_diff(got, ref)}"


def needs_avx2(lib):
    desc = lib.tr_cpu_describe()
    if not (b"avx2" in desc and b"fma" in desc and b"f16c" in desc):
        pytest.skip("this CPU does not run the AVX2 loops natively (the comparison's other side)")


TYPE_PAIRS = [(F16, F16), (F32, F32), (Q8_0, Q8_0), (Q4_0, Q4_0), (TQ2_32, TQ2_32), (Q8_0, Q4_0), (F16, Q8_0),
              (Q4_0, F16)]


@pytest.mark.parametrize("kt,vt", TYPE_PAIRS, ids=[f"{NAMES[k]}-{NAMES[v]}" for k, v in TYPE_PAIRS])
def test_avx512_equals_avx2_and_reference(lib, emu, pool, kt, vt):
    """Prompt and decode batches through block tables: the model head sizes
    and GQA groups, positions up to a few hundred, blocks of 1 to 64 slots."""
    needs_avx2(lib)
    rng = random.Random(1000 + 7 * kt + vt)
    shapes = [(64, 64, 4, 1), (128, 128, 8, 2), (256, 256, 4, 1), (96, 64, 3, 3)]
    for i, (d, dv, nh, nkv) in enumerate(shapes):
        if kt in (F32, F16) and vt in (F32, F16) and i == 3:
            d, dv = 40, 24  # ragged: masked key tails, a last group of 8 and a ragged output tail
        for decode in (False, True):
            n_kv = rng.randrange(1, 60) if not decode else rng.randrange(100, 400)
            case = Case(lib, rng, n_tokens=1 if decode else rng.randrange(1, min(9, n_kv + 1)), n_kv=n_kv, d=d, dv=dv, n_head=nh,
                        n_head_kv=nkv, k_type=kt, v_type=vt, bs=[1, 5, 16, 32, 64][(i + decode) % 5],
                        n_seq=1 + rng.randrange(2), flags=HALF_P if (i + decode) % 3 == 2 else HALF_Q | HALF_P)
            check(lib, emu, pool, case)


def test_every_query_count_and_odd_key_counts(lib, emu, pool):
    """Groups of 1 to 8 query heads (the scores' loops of 4, 2 and 1 queries
    and the weighted sums' heads in fours) and key counts of every parity,
    one run per sequence (blocks as long as the cache) and single slots."""
    needs_avx2(lib)
    rng = random.Random(5)
    for kt, vt in ((F16, F16), (Q8_0, Q8_0)):
        for group in range(1, 9):
            for n_kv in (1, 2, 3, 17, 33):
                case = Case(lib, rng, n_tokens=1, n_kv=n_kv, d=128, dv=128, n_head=group, n_head_kv=1, k_type=kt,
                            v_type=vt, bs=n_kv if group % 2 else 1, n_seq=1, decode_last=True)
                check(lib, emu, pool, case)


def test_reads_nothing_past_the_last_row(lib, emu, pool):
    """K and V whose last row ends exactly before a page that is not mapped
    (the emulator maps only readable pages): head sizes with odd block
    counts (Q8_0 pairs of blocks) and ragged F16/F32 tails (masked loads);
    the decode token reads every slot."""
    needs_avx2(lib)
    rng = random.Random(9)
    for kt, vt, d in ((F16, F16, 40), (F32, F32, 44), (F16, F16, 256), (Q8_0, Q8_0, 96), (Q4_0, Q4_0, 96),
                      (TQ2_32, TQ2_32, 160), (Q8_0, F16, 64)):
        for n_kv in (1, 7, 64):
            case = Case(lib, rng, n_tokens=1, n_kv=n_kv, d=d, dv=d, n_head=4, n_head_kv=1, k_type=kt, v_type=vt,
                        bs=0, n_seq=0, guard=True, decode_last=True)
            check(lib, emu, pool, case)


# ---- the loops one at a time: every bit of their outputs, not only what the
# softmax and the half weights let through.

LOOP_SCORES_X, LOOP_SCORES_XQ, LOOP_PV_X = 0, 1, 2
SCORES_X = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                            ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_size_t)
PV_X = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p,
                        ctypes.c_int, ctypes.c_size_t, ctypes.c_int, ctypes.c_int)
# The emulator passes integers only: the scores' float scale goes by pointer
# through this (baseline x86-64) trampoline.
TRAMPOLINE_C = r"""
#include <stddef.h>
typedef void (*scores_fn)(const void *q, int nq, const char *k, size_t stride, int n, int d, float scale, float *s,
                          size_t s_stride);
void call_scores(void *fn, const void *q, int nq, const char *k, size_t stride, int n, int d, const float *scale,
                 float *s, size_t s_stride) {
    ((scores_fn)fn)(q, nq, k, stride, n, d, *scale, s, s_stride);
}
"""


class KvRun(ctypes.Structure):  # kv_run (src/ops/attention.c)
    _fields_ = [("v", ctypes.c_void_p), ("w", ctypes.c_void_p), ("p0", ctypes.c_int), ("n", ctypes.c_int)]


@pytest.fixture(scope="module")
def trampoline(tmp_path_factory):
    import subprocess
    d = tmp_path_factory.mktemp("tramp")
    (d / "t.c").write_text(TRAMPOLINE_C)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(d / "t.so"), str(d / "t.c")], check=True)
    dll = ctypes.CDLL(str(d / "t.so"))
    return ctypes.cast(dll.call_scores, ctypes.c_void_p).value, dll


def loop(lib, kind, typ, isa):
    lib.tr_attention_loop.restype = ctypes.c_void_p
    lib.tr_attention_loop.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    return lib.tr_attention_loop(kind, typ, isa)


def buffer(data, guard=False):
    """data in memory (ending before an unmapped page with guard); (keep, address)."""
    if not guard:
        b = ctypes.create_string_buffer(data, len(data))
        return b, ctypes.addressof(b)
    pages = (len(data) + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    area = mmap.mmap(-1, (pages + 1) * mmap.PAGESIZE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    end = base + pages * mmap.PAGESIZE
    assert libc.mprotect(end, mmap.PAGESIZE, 0) == 0  # PROT_NONE: not mapped in the guest
    ctypes.memmove(end - len(data), data, len(data))
    return area, end - len(data)


def check_scores(lib, emu, trampoline, rng, kt, nq, n, d, guard):
    """scores_x (F32/F16 keys, float queries) or scores_xq (quantized keys,
    Q8_0 queries) of AVX-512, emulated, against AVX2's, natively."""
    quant = kt not in (F32, F16)
    kind = LOOP_SCORES_XQ if quant else LOOP_SCORES_X
    stride = lib.tr_row_size(kt, d) + (0 if guard else 2 * rng.randrange(3) * (32 if quant else 1))
    rows = rows_bytes(lib, kt, n, 1, d, rng)
    hb = lib.tr_row_size(kt, d)
    data = b"".join(rows[i * hb:(i + 1) * hb] + bytes(stride - hb) for i in range(n))
    if kt == Q8_0 and rng.random() < 0.3:  # every integer byte -128 .. 127, scales kept
        data = bytes(b if (i % stride) % 34 < 2 else rng.randrange(256) for i, b in enumerate(data))
    kkeep, k = buffer(data, guard)
    qf = [rng.uniform(-1, 1) for _ in range(nq * d)]
    if quant:
        qsrc = (ctypes.c_float * (nq * d))(*qf)
        qkeep = ctypes.create_string_buffer(lib.tr_row_size(Q8_0, nq * d))
        assert lib.tr_quantize(Q8_0, qsrc, qkeep, nq * d) == 0
    else:
        qkeep = (ctypes.c_float * (nq * d))(*qf)
    q = ctypes.addressof(qkeep)
    s_stride = n + rng.randrange(3)
    scale = ctypes.c_float(rng.uniform(0.05, 0.5))
    want = (ctypes.c_float * (nq * s_stride))()
    got = (ctypes.c_float * (nq * s_stride))()
    SCORES_X(loop(lib, kind, kt, ISA_AVX2))(q, nq, k, stride, n, d, scale, want, s_stride)
    emu.call(trampoline[0], loop(lib, kind, kt, ISA_AVX512), q, nq, k, stride, n, d, ctypes.addressof(scale),
             ctypes.addressof(got), s_stride)
    assert bytes(got) == bytes(want), (f"scores {NAMES[kt]} nq={nq} n={n} d={d}: AVX-512 differs at "
                                       f"{first_diff(bytes(got), bytes(want))}")


def test_scores_loops_bit_for_bit(lib, emu, trampoline):
    """Every query count (loops of 4, 2 and 1 queries), key counts of both
    parities (two keys a register), head sizes of the models and ragged ones
    (masked tails; odd block counts), padded rows."""
    needs_avx2(lib)
    rng = random.Random(21)
    for kt, dims in ((F16, (64, 128, 256, 40, 20, 3, 100)), (F32, (64, 256, 44, 5)),
                     (Q8_0, (32, 64, 96, 128, 256, 288, 512)), (Q4_0, (64, 96, 256)), (TQ2_32, (64, 160, 256))):
        for d in dims:
            for nq in (1, 2, 3, 4, 5, 8):
                check_scores(lib, emu, trampoline, rng, kt, nq, 1 + rng.randrange(40), d, False)


def check_pv(lib, emu, rng, vt, nh, dv, x0, x1, n_runs, guard):
    """pv_x of AVX-512, emulated, against AVX2's, natively: n_runs runs of a
    V pool (the last run ending at its last row), nh heads' weights,
    accumulators that start random."""
    quant = vt not in (F32, F16)
    stride = lib.tr_row_size(vt, dv)
    lens = [1 + rng.randrange(128 // n_runs) for _ in range(n_runs)]
    n_rows = sum(lens) + rng.randrange(5)
    vkeep, v = buffer(rows_bytes(lib, vt, n_rows, 1, dv, rng), guard)
    ws = sum(lens) + rng.randrange(4)
    wf = [struct.unpack("<e", struct.pack("<e", rng.random() * (rng.random() < 0.9)))[0] for _ in range(nh * ws)]
    w = (ctypes.c_float * (nh * ws))(*wf)
    runs = (KvRun * n_runs)()
    slot, row, p0 = 0, n_rows - sum(lens), rng.randrange(1000)
    for r in range(n_runs):  # runs of consecutive rows, in position order, the last at the pool's end
        runs[r] = KvRun(v + row * stride, ctypes.addressof(w) + 4 * slot, p0, lens[r])
        slot += lens[r]
        row += lens[r]
        p0 += lens[r] + (rng.randrange(3) if rng.random() < 0.3 else 0)
    acc_n = (dv + 7) // 8 * 64
    init = struct.pack(f"<{nh * acc_n}f", *[rng.uniform(-1, 1) for _ in range(nh * acc_n)])
    want = ctypes.create_string_buffer(init, len(init))
    got = ctypes.create_string_buffer(init, len(init))
    PV_X(loop(lib, LOOP_PV_X, vt, ISA_AVX2))(want, acc_n, ws, nh, runs, n_runs, stride, x0, x1)
    emu.call(loop(lib, LOOP_PV_X, vt, ISA_AVX512), ctypes.addressof(got), acc_n, ws, nh, ctypes.addressof(runs),
             n_runs, stride, x0, x1)
    assert got.raw == want.raw, (f"pv_x {NAMES[vt]} heads={nh} dv={dv} [{x0}, {x1}) runs={lens}: AVX-512 differs at "
                                 f"{first_diff(got.raw, want.raw)}")


def test_weighted_sum_loops_bit_for_bit(lib, emu):
    """1 to 8 heads (fours, then the rest), whole heads and slices of the
    output elements (32 at a time, 16, a group of 8, a ragged tail), one run
    to several, some weights 0."""
    needs_avx2(lib)
    rng = random.Random(22)
    for vt in (F16, F32, Q8_0, Q4_0, TQ2_32):
        quant = vt not in (F32, F16)
        for dv in ((64, 128, 256, 96) if quant else (64, 128, 256, 40, 24, 100, 13)):
            for nh in (1, 2, 3, 4, 5, 8):
                g = 32 if quant else 8
                x0 = g * rng.randrange((dv - 1) // g + 1)
                x0, x1 = (0, dv) if rng.random() < 0.5 else (x0, dv if rng.random() < 0.5 else
                                                               min(dv, x0 + g * (1 + rng.randrange(4))))
                check_pv(lib, emu, rng, vt, nh, dv, x0, x1, 1 + rng.randrange(6), False)


def test_loops_read_nothing_past_the_last_row(lib, emu, trampoline):
    """K and V rows packed, the last ending before an unmapped page."""
    needs_avx2(lib)
    rng = random.Random(23)
    for kt, d in ((F16, 40), (F16, 256), (F32, 44), (Q8_0, 96), (Q4_0, 96), (TQ2_32, 160)):
        for n in (1, 2, 7):
            check_scores(lib, emu, trampoline, rng, kt, 1 + rng.randrange(5), n, d, True)
    for vt, dv in ((F16, 40), (F16, 256), (F32, 100), (Q8_0, 96), (Q4_0, 64), (TQ2_32, 160)):
        check_pv(lib, emu, rng, vt, 4, dv, 0, dv, 3, True)


def count_decode(lib, emu, pool, kt, n_kv=2048):
    """Emulated instructions of one decode token over n_kv positions, Gemma 3
    270M's attention, AVX2 and AVX-512 loops."""
    rng = random.Random(1)
    case = Case(lib, rng, n_tokens=1, n_kv=n_kv, d=256, dv=256, n_head=4, n_head_kv=1, k_type=kt, v_type=kt,
                bs=256, n_seq=1, decode_last=True)
    case.run_native(lib, pool, ISA_AVX2)
    counts = {}
    for isa in (ISA_AVX2, ISA_AVX512):
        c = [0]
        case.run_emulated(lib, emu, pool, isa, count=c)
        counts[isa] = c[0]
    return counts


if __name__ == "__main__" and "--count" in sys.argv:
    lib_ = open_lib()
    emu_ = x86emu.Emulator()
    pool_ = lib_.tr_pool_new(1)
    for t in (F16, Q8_0):
        c = count_decode(lib_, emu_, pool_, t)
        print(f"{NAMES[t]:5s} AVX2 {c[ISA_AVX2]:>10,d}  AVX-512 {c[ISA_AVX512]:>10,d}  "
              f"ratio {c[ISA_AVX2] / c[ISA_AVX512]:.2f}x")
