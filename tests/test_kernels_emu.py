"""The AVX-512 and AVX-VNNI matmul kernels on any machine: run under an
emulated CPU that has both (tests/x86emu.py: Bochs's Sapphire Rapids model)
and checked as src/ops/test_matmul.c checks them on a CPU that has them:

- against the scalar reference (run natively) on ragged sizes, random
  weights and activations, and on the extreme values that would overflow a
  narrow partial sum;
- for batch invariance: tr_matmul's own chunk-and-tile loop
  (tr_matmul_chunks, with the chunk tr_matmul picks for 1, 2 and 3 threads)
  over a batch gives, bit for bit, what it gives for each token alone.

The harness is itself checked first: the AVX2 kernels, emulated, must write
exactly the bits they write natively (this machine runs AVX2), and the
AVX-512 VNNI and AVX-VNNI instructions must compute what Python computes. Without the emulator
(bochscpu-python missing) the tests skip, saying why."""
import ctypes
import os
import random
import struct
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import x86emu  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.environ.get("TRINITY_LIB", os.path.join(ROOT, "build", "libtrinity.so"))

ISA_AVX2, ISA_AVXVNNI, ISA_AVX512 = 1, 2, 3  # tr_isa
VNNI_ISAS = ((ISA_AVXVNNI, "avxvnni"), (ISA_AVX512, "avx512"))
TYPES = {  # name: (type id, byte offsets of the fp16 scales in a block), as test_matmul.c
    "F32": (0, []), "F16": (1, []), "BF16": (30, []),
    "Q8_0": (8, [0]), "Q4_0": (2, [0]), "Q4_1": (3, [0, 2]), "Q5_0": (6, [0]), "Q5_1": (7, [0, 2]),
    "Q2_K": (10, [80, 82]), "Q3_K": (11, [108]), "Q4_K": (12, [0, 2]), "Q5_K": (13, [0, 2]),
    "Q6_K": (14, [208]), "TQ1_0": (34, [52]), "TQ2_0": (35, [64]),
}
GEMM = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p,
                        ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)


class Kernel(ctypes.Structure):
    _fields_ = [("act", ctypes.c_int), ("blck", ctypes.c_int64), ("ref", ctypes.c_void_p),
                ("avx2", ctypes.c_void_p), ("avxvnni", ctypes.c_void_p), ("avx512", ctypes.c_void_p),
                ("amx", ctypes.c_void_p), ("group", ctypes.c_int64)]


def open_lib():
    """libtrinity with the kernel table's internals typed."""
    lib = ctypes.CDLL(LIB)
    lib.tr_kernel_get.restype = ctypes.POINTER(Kernel)
    lib.tr_kernel_get.argtypes = [ctypes.c_int]
    lib.tr_kernel_variant.restype = ctypes.c_void_p
    lib.tr_kernel_variant.argtypes = [ctypes.POINTER(Kernel), ctypes.c_int]
    lib.tr_row_size.restype = ctypes.c_size_t
    lib.tr_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.tr_type_block_bytes.restype = ctypes.c_size_t
    lib.tr_type_block_bytes.argtypes = [ctypes.c_int]
    lib.tr_act_row_size.restype = ctypes.c_size_t
    lib.tr_act_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.tr_act_convert.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.tr_matmul_chunk_rows.restype = ctypes.c_int64
    lib.tr_matmul_chunk_rows.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_int]
    lib.tr_cpu_describe.restype = ctypes.c_char_p
    lib.tr_x16_pack.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_int64]
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


def aligned(nbytes):
    """A 64-byte aligned buffer (kernels may use aligned loads on activations)."""
    raw = ctypes.create_string_buffer(nbytes + 64)
    addr = (ctypes.addressof(raw) + 63) & ~63
    return raw, addr


def random_weights(lib, name, rows, cols, rng):
    t, scales = TYPES[name]
    rs = lib.tr_row_size(t, cols)
    total = rs * rows
    if name == "F32":
        data = struct.pack(f"<{total // 4}f", *[rng.uniform(-1, 1) for _ in range(total // 4)])
    elif name in ("F16", "BF16"):
        vals = [rng.uniform(-1, 1) for _ in range(total // 2)]
        if name == "F16":
            data = struct.pack(f"<{len(vals)}e", *vals)
        else:
            data = b"".join(struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0] + 0x8000)[2:] for v in vals)
    else:
        buf = bytearray(rng.getrandbits(8) for _ in range(total))
        bb = lib.tr_type_block_bytes(t)
        for b in range(total // bb):
            for off in scales:
                buf[b * bb + off:b * bb + off + 2] = struct.pack("<e", (0.5 + 0.5 * (rng.uniform(-1, 1) + 1)) / 64)
        data = bytes(buf)
    keep, addr = aligned(total)
    ctypes.memmove(addr, data, total)
    return keep, addr, rs


def activations(lib, k, x, cols, nt):
    a_stride = lib.tr_act_row_size(k.act, cols)
    keep, addr = aligned(a_stride * nt)
    xs = (ctypes.c_float * (cols * nt))(*x)
    for t in range(nt):
        lib.tr_act_convert(k.act, ctypes.addressof(xs) + 4 * t * cols, addr + t * a_stride, cols)
    return keep, addr, a_stride


def term_scale(blck, cols):
    """Float sums in another order differ by rounding: the tolerance scales
    with the terms (k-quants multiply by sub-block scales up to 63)."""
    return (64.0 if blck == 256 else 1.0) * cols ** 0.5 + 1.0


def floats(addr, n):
    return list((ctypes.c_float * n).from_address(addr))


def check_close(lib, emu, k, fn, w, ws, rows, a, a_stride, nt, cols, rel, what):
    """The kernel fn, emulated, against k's scalar reference, natively, on
    the same weights and activations: equal up to float rounding."""
    y0k, y0 = aligned(4 * rows * nt)
    y1k, y1 = aligned(4 * rows * nt)
    GEMM(k.ref)(cols, w, ws, rows, a, a_stride, nt, y0, rows)
    emu.call(fn, cols, w, ws, rows, a, a_stride, nt, y1, rows)
    r, e = floats(y0, rows * nt), floats(y1, rows * nt)
    tol = 1e-5 * term_scale(k.blck, cols)
    bad = [i for i in range(rows * nt) if not abs(r[i] - e[i]) <= tol + rel * abs(r[i])]
    assert not bad, (f"{what} rows={rows} cols={cols} nt={nt}: {len(bad)} of {rows * nt} differ, "
                     f"first [{bad[0]}] {e[bad[0]]} vs reference {r[bad[0]]}")


def variants(lib, isa):
    out = []
    for name, (t, _) in TYPES.items():
        k = lib.tr_kernel_get(t)
        fn = lib.tr_kernel_variant(k, isa) if k else None
        if fn:
            out.append((name, k.contents, fn))
    return out


def check_against_reference(lib, emu, isa, reps, seed):
    """Every kernel of `isa` against the scalar reference; the number of
    kernels checked."""
    rng = random.Random(seed)
    checked = 0
    for name, k, fn in variants(lib, isa):
        bl = max(32, k.blck)
        for _ in range(reps):
            cols, rows, nt = bl * (1 + rng.randrange(9)), 1 + rng.randrange(37), 1 + rng.randrange(17)
            wkeep, w, ws = random_weights(lib, name, rows, cols, rng)
            akeep, a, a_stride = activations(lib, k, [rng.uniform(-1, 1) for _ in range(cols * nt)], cols, nt)
            check_close(lib, emu, k, fn, w, ws, rows, a, a_stride, nt, cols, 1e-5, name)
        checked += 1
    return checked


VNNI_DOTS = {  # target, loop body: a vpdpbusd loop in each encoding
    "avx512": ("avx512f,avx512bw,avx512vl,avx512vnni", "__m512i", 64, "_mm512_setzero_si512()",
               "_mm512_dpbusd_epi32(acc, _mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i))",
               "_mm512_reduce_add_epi32(acc)"),
    "avxvnni": ("avx2,avxvnni", "__m256i", 32, "_mm256_setzero_si256()",
                "_mm256_dpbusd_avx_epi32(acc, _mm256_loadu_si256((const __m256i *)(a + i)), "
                "_mm256_loadu_si256((const __m256i *)(b + i)))",
                "_mm256_extract_epi32(acc, 0) + _mm256_extract_epi32(acc, 1) + _mm256_extract_epi32(acc, 2) + "
                "_mm256_extract_epi32(acc, 3) + _mm256_extract_epi32(acc, 4) + _mm256_extract_epi32(acc, 5) + "
                "_mm256_extract_epi32(acc, 6) + _mm256_extract_epi32(acc, 7)"),
}


@pytest.mark.parametrize("isa", sorted(VNNI_DOTS))
def test_emulator_runs_vnni(tmp_path, emu, isa):
    """A vpdpbusd loop (EVEX for AVX-512, VEX for AVX-VNNI), emulated,
    against Python's arithmetic (and an instruction this CPU lacks does run:
    the emulator is not the host)."""
    target, vec, step, zero, body, total = VNNI_DOTS[isa]
    src = tmp_path / "vnni.c"
    src.write_text(f"""
#include <immintrin.h>
#include <stdint.h>
__attribute__((target("{target}")))
int64_t dot(const uint8_t *a, const int8_t *b, int64_t n) {{
    {vec} acc = {zero};
    for (int64_t i = 0; i < n; i += {step})
        acc = {body};
    return {total};
}}
""")
    so = tmp_path / "libvnni.so"
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    if isa == "avxvnni":  # the VEX encoding (C4/C5 prefix), not an EVEX one (62) the compiler could pick
        dis = subprocess.run(["objdump", "-d", str(so)], capture_output=True, text=True).stdout
        assert "{vex}" in dis or "vpdpbusd %ymm" in dis, "no VEX vpdpbusd in the test function"
    dll = ctypes.CDLL(str(so))
    rng = random.Random(5)
    n = 64 * 9
    a = (ctypes.c_uint8 * n)(*[rng.randrange(256) for _ in range(n)])
    b = (ctypes.c_int8 * n)(*[rng.randrange(-128, 128) for _ in range(n)])
    fn = ctypes.cast(dll.dot, ctypes.c_void_p).value
    got = ctypes.c_int32(emu.call(fn, ctypes.addressof(a), ctypes.addressof(b), n) & 0xFFFFFFFF).value
    assert got == sum(x * y for x, y in zip(a, b))


def test_emulated_avx2_kernels_write_native_bits(lib, emu):
    """The harness: the AVX2 kernels run natively here; emulated they must
    give the very same bits (so an emulated pass of the AVX-512 kernels
    means what a native one would)."""
    if not (b"avx2" in lib.tr_cpu_describe() and b"fma" in lib.tr_cpu_describe()):
        pytest.skip("this CPU does not run the AVX2 kernels natively")
    rng = random.Random(11)
    n = 0
    for name, k, fn in variants(lib, ISA_AVX2):
        bl = max(32, k.blck)
        cols, rows, nt = bl * 3, 13, 5
        wkeep, w, ws = random_weights(lib, name, rows, cols, rng)
        akeep, a, a_stride = activations(lib, k, [rng.uniform(-1, 1) for _ in range(cols * nt)], cols, nt)
        y0k, y0 = aligned(4 * rows * nt)
        y1k, y1 = aligned(4 * rows * nt)
        GEMM(fn)(cols, w, ws, rows, a, a_stride, nt, y0, rows)
        emu.call(fn, cols, w, ws, rows, a, a_stride, nt, y1, rows)
        assert ctypes.string_at(y0, 4 * rows * nt) == ctypes.string_at(y1, 4 * rows * nt), name
        n += 1
    assert n >= 10


AVXVNNI_SAME_BITS_AS_AVX2 = ("TQ1_0", "TQ2_0")  # integer lanes and float steps as AVX2's (docs/DESIGN.md)


def test_avxvnni_ternary_kernels_write_avx2_bits(lib, emu):
    """The AVX-VNNI TQ1_0/TQ2_0 kernels (vpdpbusd where AVX2 has vpmaddubsw
    and int16 adds) write the AVX2 kernels' very bits, one token (two rows
    at once, an odd row left) and tiles alike; both emulated."""
    rng = random.Random(17)
    for name in AVXVNNI_SAME_BITS_AS_AVX2:
        k = lib.tr_kernel_get(TYPES[name][0])
        fns = [lib.tr_kernel_variant(k, isa) for isa in (ISA_AVX2, ISA_AVXVNNI)]
        if not all(fns):
            pytest.fail(f"{name}: no AVX2 or AVX-VNNI kernel in this build")
        for nt in (1, 2, 3, 4, 5, 9):
            cols, rows = 256 * (1 + rng.randrange(6)), 1 + rng.randrange(21)
            wkeep, w, ws = random_weights(lib, name, rows, cols, rng)
            akeep, a, a_stride = activations(lib, k.contents, [rng.uniform(-1, 1) for _ in range(cols * nt)], cols,
                                             nt)
            out = []
            for fn in fns:
                yk, y = aligned(4 * rows * nt)
                emu.call(fn, cols, w, ws, rows, a, a_stride, nt, y, rows)
                out.append(ctypes.string_at(y, 4 * rows * nt))
            assert out[0] == out[1], f"{name} rows={rows} cols={cols} nt={nt}"


@pytest.mark.parametrize("isa,isa_name", VNNI_ISAS)
def test_vnni_kernels_match_scalar_reference(lib, emu, isa, isa_name):
    n = check_against_reference(lib, emu, isa, reps=4, seed=1)
    print(f"{isa_name} kernels checked under emulation: {n}")
    if n == 0:
        pytest.skip(f"this build has no {isa_name} kernels")


@pytest.mark.parametrize("isa,isa_name", VNNI_ISAS)
def test_vnni_kernels_extreme_values(lib, emu, isa, isa_name):
    """All quant bytes 0xff (or 0x80), sane scales, activations all +1, all
    -1 or alternating: the sums that would overflow a narrow accumulator."""
    checked = 0
    for name, k, fn in variants(lib, isa):
        t, scales = TYPES[name]
        if not scales:
            continue
        cols = 512 if k.blck == 256 else 32 * 7
        rows, nt = 11, 6
        ws = lib.tr_row_size(t, cols)
        bb = lib.tr_type_block_bytes(t)
        for fill in (0xFF, 0x80):
            buf = bytearray([fill]) * (ws * rows)
            for b in range(ws * rows // bb):
                for off in scales:
                    buf[b * bb + off:b * bb + off + 2] = struct.pack("<e", 1.0 / 64)
            wkeep, w = aligned(len(buf))
            ctypes.memmove(w, bytes(buf), len(buf))
            for pat in range(3):
                x = [1.0 if pat == 0 else -1.0 if pat == 1 else (1.0 if (i // 32 + i // cols) % 2 else -1.0)
                     for i in range(cols * nt)]
                akeep, a, a_stride = activations(lib, k, x, cols, nt)
                check_close(lib, emu, k, fn, w, ws, rows, a, a_stride, nt, cols, 1e-4, f"{name} fill {fill:#x} pattern {pat}")
        checked += 1
    if checked == 0:
        pytest.skip(f"this build has no {isa_name} quantized kernels")


@pytest.mark.parametrize("isa,isa_name", VNNI_ISAS)
def test_vnni_batch_results_equal_single_token_results(lib, emu, isa, isa_name):
    """tr_matmul's loop (chunks of rows, tiles of tokens) over a batch, with
    the AVX-512 or AVX-VNNI kernel, equals bit for bit the same loop over each token
    alone, for the chunks tr_matmul picks on 1, 2 and 3 threads."""
    rng = random.Random(3)
    fn_chunks = ctypes.cast(lib.tr_matmul_chunks, ctypes.c_void_p).value
    checked = 0
    for name, k, fn in variants(lib, isa):
        bl = max(32, k.blck)
        for nt in (2, 5, 9, 17, 20):
            cols, rows = bl * (1 + rng.randrange(4)), 1 + rng.randrange(70)
            wkeep, w, ws = random_weights(lib, name, rows, cols, rng)
            akeep, a, a_stride = activations(lib, k, [rng.uniform(-1, 1) for _ in range(cols * nt)], cols, nt)
            for nth in (1, 2, 3):
                yb_k, yb = aligned(4 * rows * nt)
                emu.call(fn_chunks, fn, lib.tr_matmul_chunk_rows(rows, nt, nth), w, ws, rows, cols, a, a_stride, nt,
                         yb)
                batch = ctypes.string_at(yb, 4 * rows * nt)
                for t in range(nt):
                    y1k, y1 = aligned(4 * rows)
                    emu.call(fn_chunks, fn, lib.tr_matmul_chunk_rows(rows, 1, nth), w, ws, rows, cols,
                             a + t * a_stride, a_stride, 1, y1)
                    assert ctypes.string_at(y1, 4 * rows) == batch[4 * rows * t:4 * rows * (t + 1)], (
                        f"{name} rows={rows} cols={cols} nt={nt} threads={nth}: token {t} differs alone")
        checked += 1
    if checked == 0:
        pytest.skip(f"this build has no {isa_name} kernels")


def test_float_kernels_ragged_rows(lib, emu):
    """The float kernels (F32, F16, BF16: blocks of one element) on rows of
    any length, whose ends the SIMD loops take apart (a scalar tail in the
    AVX2 kernels, masked loads in the AVX-512 ones), against the reference."""
    rng = random.Random(7)
    checked = 0
    for isa in (ISA_AVX2, ISA_AVX512):
        for name, k, fn in variants(lib, isa):
            if k.blck != 1:
                continue
            for cols in (1, 5, 15, 16, 17, 31, 33, 47, 63, 100):
                rows, nt = 5, 6
                wkeep, w, ws = random_weights(lib, name, rows, cols, rng)
                akeep, a, a_stride = activations(lib, k, [rng.uniform(-1, 1) for _ in range(cols * nt)], cols, nt)
                check_close(lib, emu, k, fn, w, ws, rows, a, a_stride, nt, cols, 1e-5, f"{name} isa {isa}")
            checked += 1
    if checked == 0:
        pytest.skip("this build has no SIMD float kernels")


X16 = {"Q4_K": 65, "Q4_0": 66, "Q5_0": 67, "Q8_0": 68}  # tr_type of each source's layout repacked at load


@pytest.mark.parametrize("isa", ["avx512", "avxvnni"])
@pytest.mark.parametrize("src", sorted(X16))
def test_x16_kernels_write_reference_bits(lib, emu, src, isa):
    """The AVX-512 and AVX-VNNI kernels of rows repacked at load
    (src/model/repack.c: sixteen rows interleaved), emulated, through
    tr_matmul's chunk-and-tile loop on chunks of 16, 32 and 64 rows: bit for
    bit the source format's scalar reference on the file's rows (natively),
    for 1..9 tokens. (The AVX2 ones run natively in test_matmul.)"""
    rng = random.Random(11)
    ks = lib.tr_kernel_get(TYPES[src][0]).contents
    kx = lib.tr_kernel_get(X16[src])
    fn = lib.tr_kernel_variant(kx, ISA_AVX512 if isa == "avx512" else ISA_AVXVNNI) if kx else None
    if not fn:
        pytest.skip(f"this build has no {isa} {src}_X16 kernel")
    assert kx.contents.group == 16
    fn_chunks = ctypes.cast(lib.tr_matmul_chunks, ctypes.c_void_p).value
    bl = ks.blck
    for cols, rows, nt in ((bl, 16, 1), (2 * bl, 32, 3), (3 * bl, 48, 9)):
        wkeep, w, ws = random_weights(lib, src, rows, cols, rng)
        xs = lib.tr_row_size(X16[src], cols)
        assert xs == (cols // 256 * 148 if src == "Q4_K" else ws)
        xkeep, x16 = aligned(xs * rows)
        for g in range(rows // 16):
            lib.tr_x16_pack(X16[src], w + g * 16 * ws, ws, x16 + g * 16 * xs, cols)
        akeep, a, a_stride = activations(lib, ks, [rng.uniform(-1, 1) for _ in range(cols * nt)], cols, nt)
        y0k, y0 = aligned(4 * rows * nt)
        GEMM(ks.ref)(cols, w, ws, rows, a, a_stride, nt, y0, rows)
        want = ctypes.string_at(y0, 4 * rows * nt)
        for chunk in (16, 32, 64):
            y1k, y1 = aligned(4 * rows * nt)
            emu.call(fn_chunks, fn, chunk, x16, xs, rows, cols, a, a_stride, nt, y1)
            assert ctypes.string_at(y1, 4 * rows * nt) == want, f"rows={rows} cols={cols} nt={nt} chunk={chunk}"


def test_kernels_read_nothing_past_the_last_row(lib, emu):
    """A file's last tensor can end where its mapping ends: every kernel
    (AVX2, AVX-VNNI and AVX-512), on weights whose last row ends exactly before a page
    that is not mapped, must not touch that page (the emulator maps only the
    readable pages, so a read past the end is a fault there)."""
    import mmap
    rng = random.Random(13)
    checked = 0
    for isa in (ISA_AVX2, ISA_AVXVNNI, ISA_AVX512):
        for name, k, fn in variants(lib, isa):
            bl = max(32, k.blck)
            cols, rows = bl * 3, 5
            wkeep, w, ws = random_weights(lib, name, rows, cols, rng)
            total = ws * rows
            pages = (total + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            area = mmap.mmap(-1, (pages + 1) * mmap.PAGESIZE)
            base = ctypes.addressof(ctypes.c_char.from_buffer(area))
            libc = ctypes.CDLL(None)
            libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            assert libc.mprotect(base + pages * mmap.PAGESIZE, mmap.PAGESIZE, 0) == 0  # PROT_NONE guard
            end = base + pages * mmap.PAGESIZE
            ctypes.memmove(end - total, w, total)
            for nt in (1, 2, 4, 5):
                akeep, a, a_stride = activations(lib, k, [rng.uniform(-1, 1) for _ in range(cols * nt)], cols, nt)
                check_close(lib, emu, k, fn, end - total, ws, rows, a, a_stride, nt, cols, 1e-5, f"{name} isa {isa}")
            libc.mprotect(base + pages * mmap.PAGESIZE, mmap.PAGESIZE, 3)
            checked += 1
    assert checked >= 42  # AVX2 15, AVX-VNNI 12, AVX-512 15 kernels
