"""Attention's AVX-512 inner loops on any machine: tr_attention_variant with
the AVX-512 loops runs under an emulated CPU that has AVX-512
(tests/x86emu.py: Bochs's Sapphire Rapids model), on one thread (a pool of
one runs the work in the calling thread, and its scratch, grown by a native
call first, is reused: no system call under emulation), and must write,
bit for bit, what the AVX2 loops write natively, and what the scalar
reference writes where src/ops/test_attention.c says those agree (halves or
quantized entries with TR_ATTN_HALF_P).

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
        if not guard:
            buf = ctypes.create_string_buffer(data, len(data))
            self.keep.append(buf)
            return ctypes.addressof(buf)
        pages = (len(data) + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        area = mmap.mmap(-1, (pages + 1) * mmap.PAGESIZE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(area))
        libc = ctypes.CDLL(None)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        end = base + pages * mmap.PAGESIZE
        assert libc.mprotect(end, mmap.PAGESIZE, 0) == 0  # PROT_NONE: not mapped in the guest
        ctypes.memmove(end - len(data), data, len(data))
        self.keep.append(area)
        return end - len(data)

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
