"""Our tensor formats against two independent references.

1. The gguf package's numpy code (a port of ggml's reference code): the type
   table's geometry, dequantization of random blocks and of every tensor of
   the real model (bit-identical float32), and quantization to identical
   bytes wherever the package has a quantizer.
2. ggml itself: the libggml-base.so that llama-cpp-python ships exports
   ggml_quantize_chunk (what llama-quantize calls), the reference quantizers
   (quantize_row_*_ref), the dequantizers and the type table. Same geometry,
   bit-identical dequantization, byte-identical quantization (k-quants
   included) on synthetic data and on real weights.

One file, so the slow GGUFReader (its Python metadata parsing takes most of
this test's time) runs once."""
import ctypes
import os

import gguf
import llama_cpp
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf import quants

# Formats we must dequantize; each is checked against the package below.
REQUIRED_DEQUANT = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K,
                    T.Q5_K, T.Q6_K, T.TQ1_0, T.TQ2_0]
REQUIRED_QUANT = [T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_K, T.Q4_K, T.Q6_K, T.TQ1_0, T.TQ2_0]

# Byte offsets of the fp16 scale fields in each block (ggml's struct layouts).
# Random bytes there would often be inf/NaN, which makes a whole block NaN
# and the comparison meaningless, so most test blocks get finite scales.
FP16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    T.TQ1_0: [52], T.TQ2_0: [64], T.IQ4_NL: [0], T.IQ4_XS: [0],
}


def _setup(lib):
    lib.tr_dequantize.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.tr_dequantize.restype = ctypes.c_int
    lib.tr_quantize.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.tr_quantize.restype = ctypes.c_int
    lib.tr_type_block_size.argtypes = [ctypes.c_int]
    lib.tr_type_block_size.restype = ctypes.c_int64
    lib.tr_type_block_bytes.argtypes = [ctypes.c_int]
    lib.tr_type_block_bytes.restype = ctypes.c_size_t
    lib.tr_type_name.argtypes = [ctypes.c_int]
    lib.tr_type_name.restype = ctypes.c_char_p
    lib.tr_type_can_dequantize.argtypes = [ctypes.c_int]
    lib.tr_type_can_dequantize.restype = ctypes.c_bool
    lib.tr_type_can_quantize.argtypes = [ctypes.c_int]
    lib.tr_type_can_quantize.restype = ctypes.c_bool
    lib.tr_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.tr_row_size.restype = ctypes.c_size_t
    return lib


@pytest.fixture(scope="module")
def q(lib):
    return _setup(lib)


def ours_dequantize(lib, qtype, raw):
    raw = np.ascontiguousarray(raw).view(np.uint8).ravel()
    bs, ts = GGML_QUANT_SIZES[qtype]
    assert raw.size % ts == 0
    n = raw.size // ts * bs
    out = np.empty(n, dtype=np.float32)
    st = lib.tr_dequantize(int(qtype), raw.ctypes.data, out.ctypes.data, n)
    assert st == 0, f"tr_dequantize({qtype.name}) returned {st}"
    return out


def ours_quantize(lib, qtype, x):
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    bs, ts = GGML_QUANT_SIZES[qtype]
    assert x.size % bs == 0
    out = np.zeros(x.size // bs * ts, dtype=np.uint8)
    st = lib.tr_quantize(int(qtype), x.ctypes.data, out.ctypes.data, x.size)
    assert st == 0, f"tr_quantize({qtype.name}) returned {st}"
    return out


def ref_dequantize(qtype, raw):
    bs, ts = GGML_QUANT_SIZES[qtype]
    # one long row: the package splits its work into groups of 16 rows, and
    # millions of one-block rows would spend the time in Python overhead
    raw = np.ascontiguousarray(raw).view(np.uint8).reshape(1, -1)
    assert raw.size % ts == 0
    with np.errstate(all="ignore"):  # inf * 0 in raw-byte blocks is expected
        return np.asarray(quants.dequantize(raw, qtype), dtype=np.float32).ravel()


def assert_same_floats(ours, ref, what):
    """Bitwise-equal float32 (so -0.0 != 0.0), except that any NaN equals any NaN."""
    assert ours.shape == ref.shape, what
    if np.array_equal(ours.view(np.uint32), ref.view(np.uint32)):
        return
    nan_o, nan_r = np.isnan(ours), np.isnan(ref)
    bad = (nan_o != nan_r) | (~nan_o & ~nan_r & (ours.view(np.uint32) != ref.view(np.uint32)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        pytest.fail(f"{what}: {int(bad.sum())} of {bad.size} elements differ; first at {i}: "
                    f"ours {ours[i]!r} ({ours.view(np.uint32)[i]:#010x}) vs gguf {ref[i]!r} "
                    f"({ref.view(np.uint32)[i]:#010x})")


def has_ref_dequant(qtype):
    return qtype in (T.F32, T.F16) or qtype in quants._type_traits


def has_ref_quant(qtype):
    if qtype in (T.F32, T.F16):
        return True
    cls = quants._type_traits.get(qtype)
    if cls is None:
        return False
    try:
        cls.quantize_blocks(np.zeros((1, cls.block_size), dtype=np.float32))
    except NotImplementedError:
        return False
    return True


def random_blocks(rng, qtype, n_blocks, finite_scales):
    bs, ts = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, ts), dtype=np.uint8)
    if finite_scales:
        for off in FP16_FIELDS.get(qtype, []):
            # magnitudes from subnormal halves to ~100, both signs, some zeros
            mag = np.exp2(rng.uniform(-26, 7, size=n_blocks)).astype(np.float32)
            sign = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=n_blocks)
            v = (mag * sign).astype(np.float16)
            v[rng.random(n_blocks) < 0.02] = 0
            raw[:, off:off + 2] = v.view(np.uint8).reshape(n_blocks, 2)
    return raw


# ------------------------------------------------------------------ the table

def test_table_geometry_matches_gguf_package(q):
    for qtype, (bs, ts) in GGML_QUANT_SIZES.items():
        if int(qtype) >= 40:  # types newer than our enum (e.g. NVFP4) are not ours to know
            assert q.tr_type_name(int(qtype)) is None
            continue
        assert q.tr_type_name(int(qtype)) == qtype.name.encode(), qtype.name
        if qtype == T.Q8_1:
            # gguf-py still lists the old 40-byte layout (float d, float s); ggml's block_q8_1 has
            # been {ggml_half2 ds; int8_t qs[32]} = 36 bytes since 2023. Q8_1 is an activation-only
            # format that never appears in files, so ggml's size is the one that matters.
            assert (bs, ts) == (32, 40)
            ts = 36
        assert q.tr_type_block_size(int(qtype)) == bs, qtype.name
        assert q.tr_type_block_bytes(int(qtype)) == ts, qtype.name
        assert q.tr_row_size(int(qtype), bs * 3) == ts * 3, qtype.name
        if bs > 1:
            assert q.tr_row_size(int(qtype), bs * 3 + 1) == 0, qtype.name
    # values that are not ggml types
    for bad in (-1, 4, 5, 31, 32, 33, 36, 40, 1000):
        assert q.tr_type_name(bad) is None
        assert q.tr_type_block_size(bad) == 0


def test_required_formats_are_supported(q):
    for qtype in REQUIRED_DEQUANT:
        assert q.tr_type_can_dequantize(int(qtype)), qtype.name
    for qtype in REQUIRED_QUANT:
        assert q.tr_type_can_quantize(int(qtype)), qtype.name


def test_bad_arguments_are_refused(q):
    buf = np.zeros(1024, dtype=np.uint8)
    out = np.zeros(1024, dtype=np.float32)
    assert q.tr_dequantize(int(T.Q4_K), buf.ctypes.data, out.ctypes.data, 100) != 0  # not a multiple of 256
    assert q.tr_dequantize(int(T.Q4_0), buf.ctypes.data, out.ctypes.data, -32) != 0
    assert q.tr_dequantize(999, buf.ctypes.data, out.ctypes.data, 32) != 0
    assert q.tr_quantize(int(T.Q8_0), out.ctypes.data, buf.ctypes.data, 33) != 0


# ----------------------------------------------------------- dequantization

def dequant_types(q):
    types = [t for t in GGML_QUANT_SIZES if int(t) < 40 and q.tr_type_can_dequantize(int(t))]
    assert set(REQUIRED_DEQUANT) <= set(types)
    return types


@pytest.mark.parametrize("finite_scales", [True, False], ids=["finite-scales", "raw-bytes"])
def test_dequantize_random_blocks(q, finite_scales):
    rng = np.random.default_rng(1234 + finite_scales)
    checked = []
    for qtype in dequant_types(q):
        if not has_ref_dequant(qtype):
            continue
        raw = random_blocks(rng, qtype, 4096, finite_scales)
        assert_same_floats(ours_dequantize(q, qtype, raw), ref_dequantize(qtype, raw), qtype.name)
        checked.append(qtype)
    assert set(REQUIRED_DEQUANT) <= set(checked)


def test_f16_every_half(q):
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    ours = ours_dequantize(q, T.F16, halves)
    assert_same_floats(ours, halves.view(np.float16).astype(np.float32), "F16 all 65536 values")
    # the NaN payload is kept, not only NaN-ness
    nan = (halves & 0x7c00) == 0x7c00
    assert np.array_equal(ours.view(np.uint32)[nan] >> 13 & 0x3ff, (halves[nan] & 0x3ff).astype(np.uint32))


def test_bf16_every_value(q):
    vals = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    assert_same_floats(ours_dequantize(q, T.BF16, vals), ref_dequantize(T.BF16, vals), "BF16 all 65536 values")


@pytest.fixture(scope="module")
def model_reader(model_path):
    return gguf.GGUFReader(model_path)


def test_dequantize_every_tensor_of_the_model(q, model_reader):
    reader = model_reader
    seen = set()
    for t in reader.tensors:
        qtype = t.tensor_type
        data = np.ascontiguousarray(t.data)
        rows = data.reshape(-1, data.shape[-1]) if data.ndim > 1 else data.reshape(1, -1)
        # chunks of rows bound the memory of the two float copies (token_embd has 168M elements)
        step = max(1, (1 << 24) // (int(t.n_elements) // rows.shape[0]))
        for r0 in range(0, rows.shape[0], step):
            chunk = rows[r0:r0 + step]
            assert_same_floats(ours_dequantize(q, qtype, chunk), ref_dequantize(qtype, chunk),
                               f"{t.name} ({qtype.name}) rows {r0}..")
        seen.add(qtype)
    assert {T.Q4_K, T.Q6_K, T.Q5_0, T.Q8_0, T.F32} <= seen


# -------------------------------------------------------------- quantization

def sample_data(rng, bs, n_blocks):
    """Blocks of varied character: gaussian at several scales, uniform, outliers, all-zero, constant."""
    x = rng.standard_normal((n_blocks, bs)).astype(np.float32)
    x *= np.exp2(rng.uniform(-10, 6, size=(n_blocks, 1))).astype(np.float32)
    k = n_blocks // 8
    x[:k] = rng.uniform(-3, 3, size=(k, bs)).astype(np.float32)
    out = rng.integers(0, bs, size=k)
    x[k:2 * k][np.arange(k), out] *= 50  # one big outlier per block
    x[2 * k:2 * k + 4] = 0
    x[2 * k + 4:2 * k + 8] = np.float32(0.75)
    x[2 * k + 8:2 * k + 12] = -np.abs(x[2 * k + 8:2 * k + 12])  # all negative
    return x


def test_quantizers_match_gguf_bytes(q):
    rng = np.random.default_rng(42)
    checked = []
    for qtype in GGML_QUANT_SIZES:
        if int(qtype) >= 40 or qtype == T.F32 or not q.tr_type_can_quantize(int(qtype)) or not has_ref_quant(qtype):
            continue
        bs, ts = GGML_QUANT_SIZES[qtype]
        x = sample_data(rng, max(bs, 256), 512 if bs > 1 else 64)
        ref = np.ascontiguousarray(quants.quantize(x, qtype)).view(np.uint8).ravel()
        ours = ours_quantize(q, qtype, x)
        if not np.array_equal(ours, ref):
            i = int(np.flatnonzero(ours != ref)[0])
            pytest.fail(f"{qtype.name}: {int((ours != ref).sum())} bytes differ; first in block {i // ts} "
                        f"byte {i % ts}: ours {ours[i]:#04x} vs gguf {ref[i]:#04x}")
        checked.append(qtype)
    expected = {T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.TQ1_0, T.TQ2_0}
    assert expected <= set(checked), f"checked only {[t.name for t in checked]}"


def test_f16_bf16_encode_every_float_class(q):
    """Random float32 bit patterns cover subnormals, overflow, rounding ties and NaN."""
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, size=1 << 20, dtype=np.uint64).astype(np.uint32)
    # plus the values around the F16 edges: 65504, 65520, 2^-14, 2^-24, 2^-25 and their neighbours
    edges = np.array([65504, 65519.996, 65520, 65536, 2.0**-14, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-26,
                      1 + 2.0**-11, 1 + 3 * 2.0**-11, 0.0, -0.0, np.inf, -np.inf], dtype=np.float32).view(np.uint32)
    edges = np.concatenate([edges, edges + 1, edges - 1, edges | 0x80000000])
    x = np.concatenate([bits, edges]).view(np.float32)

    ours16 = ours_quantize(q, T.F16, x).view(np.uint16)
    with np.errstate(all="ignore"):
        ref16 = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    assert np.array_equal(ours16[~nan], ref16[~nan])
    assert np.isnan(ours16[nan].view(np.float16)).all()
    # sign is kept on NaN too
    assert np.array_equal(ours16[nan] >> 15, (x[nan].view(np.uint32) >> 31).astype(np.uint16))

    oursbf = ours_quantize(q, T.BF16, x)
    refbf = np.ascontiguousarray(quants.quantize(x, T.BF16)).view(np.uint8).ravel()
    assert np.array_equal(oursbf, refbf)


# ======================================================= against ggml itself

GGML = os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so")

# Every format whose row functions ggml exports under these names.
QUANT_TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q8_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_K,
               T.TQ1_0, T.TQ2_0, T.MXFP4, T.IQ4_NL]
DEQUANT_TYPES = [t for t in QUANT_TYPES if t != T.Q8_1] + [T.IQ4_XS]  # ggml has no dequantize_row_q8_1


def fn_name(qtype):
    return qtype.name.lower().replace("_k", "_K")


@pytest.fixture(scope="module")
def g():
    lib = ctypes.CDLL(GGML)
    lib.ggml_type_size.argtypes = [ctypes.c_int]
    lib.ggml_type_size.restype = ctypes.c_size_t
    lib.ggml_blck_size.argtypes = [ctypes.c_int]
    lib.ggml_blck_size.restype = ctypes.c_int64
    lib.ggml_type_name.argtypes = [ctypes.c_int]
    lib.ggml_type_name.restype = ctypes.c_char_p
    for name in ["ggml_fp16_to_fp32_row", "ggml_bf16_to_fp32_row", "ggml_fp32_to_fp16_row",
                 "ggml_fp32_to_bf16_row_ref"]:
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        getattr(lib, name).restype = None
    for t in (T.Q8_1, T.Q8_K):
        f = getattr(lib, f"quantize_row_{fn_name(t)}_ref")
        f.argtypes, f.restype = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64], None
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    for t in DEQUANT_TYPES:
        f = getattr(lib, f"dequantize_row_{fn_name(t)}")
        f.argtypes, f.restype = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64], None
    return lib


def ggml_quantize(g, qtype, x):
    """What llama-quantize writes (ggml_quantize_chunk, no importance matrix); for
    the activation-only formats, which that entry point refuses, the _ref quantizer.
    The two agree for every other format except IQ4_NL, whose _ref skips the scale
    search that llama-quantize does."""
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    bs, ts = g.ggml_blck_size(int(qtype)), g.ggml_type_size(int(qtype))
    out = np.zeros(x.size // bs * ts, dtype=np.uint8)
    if qtype in (T.Q8_1, T.Q8_K):
        getattr(g, f"quantize_row_{fn_name(qtype)}_ref")(x.ctypes.data, out.ctypes.data, x.size)
    else:
        n_per_row = 256 if x.size % 256 == 0 else bs
        g.ggml_quantize_chunk(int(qtype), x.ctypes.data, out.ctypes.data, 0, x.size // n_per_row, n_per_row, None)
    return out


def ggml_dequantize(g, qtype, raw):
    raw = np.ascontiguousarray(raw).view(np.uint8).ravel()
    bs, ts = g.ggml_blck_size(int(qtype)), g.ggml_type_size(int(qtype))
    out = np.empty(raw.size // ts * bs, dtype=np.float32)
    getattr(g, f"dequantize_row_{fn_name(qtype)}")(raw.ctypes.data, out.ctypes.data, out.size)
    return out


def assert_same_bytes(ours, ref, qtype, ts):
    if not np.array_equal(ours, ref):
        i = int(np.flatnonzero(ours != ref)[0])
        nb = ours.size // ts
        bad = int((ours.reshape(nb, ts) != ref.reshape(nb, ts)).any(axis=1).sum())
        pytest.fail(f"{qtype.name}: {bad} of {nb} blocks differ; first at block {i // ts} byte {i % ts}: "
                    f"ours {ours[i]:#04x} vs ggml {ref[i]:#04x}")


def test_geometry_matches_ggml(q, g):
    for t in range(40):
        bs = g.ggml_blck_size(t)
        if bs == 0:  # a removed type number
            assert q.tr_type_name(t) is None, t
            continue
        assert q.tr_type_name(t).lower() == g.ggml_type_name(t).lower(), t
        assert q.tr_type_block_size(t) == bs, t
        assert q.tr_type_block_bytes(t) == g.ggml_type_size(t), t


@pytest.mark.parametrize("finite_scales", [True, False], ids=["finite-scales", "raw-bytes"])
def test_dequantize_random_blocks_like_ggml(q, g, finite_scales):
    rng = np.random.default_rng(99 + finite_scales)
    for qtype in DEQUANT_TYPES:
        raw = random_blocks(rng, qtype, 2048, finite_scales)
        if qtype == T.Q8_K and finite_scales:  # its scale is a float
            raw[:, 0:4] = (rng.standard_normal(2048).astype(np.float32) * 0.01).view(np.uint8).reshape(2048, 4)
        assert_same_floats(ours_dequantize(q, qtype, raw), ggml_dequantize(g, qtype, raw), qtype.name)
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    for qtype, fn in ((T.F16, g.ggml_fp16_to_fp32_row), (T.BF16, g.ggml_bf16_to_fp32_row)):
        ref = np.empty(65536, dtype=np.float32)
        fn(halves.ctypes.data, ref.ctypes.data, 65536)
        assert_same_floats(ours_dequantize(q, qtype, halves), ref, qtype.name)


def varied_data(rng, n_blocks):
    """sample_data plus values on coarse grids, where rounding ties are common."""
    x = sample_data(rng, 256, n_blocks)
    k = n_blocks // 8
    x[-k:] = rng.integers(-16, 17, size=(k, 256)).astype(np.float32) * np.float32(0.125)
    x[-2 * k:-k] = rng.integers(-2, 3, size=(k, 256)).astype(np.float32)  # ternary-ish, ties at .5
    return x


def test_quantizers_match_ggml_bytes(q, g):
    rng = np.random.default_rng(2024)
    x = varied_data(rng, 1024)
    for qtype in QUANT_TYPES:
        assert q.tr_type_can_quantize(int(qtype)), qtype.name
        assert_same_bytes(ours_quantize_any(q, g, qtype, x), ggml_quantize(g, qtype, x), qtype,
                          g.ggml_type_size(int(qtype)))


def ours_quantize_any(q, g, qtype, x):
    # ours_quantize sizes its buffer from gguf's table, which is stale for Q8_1
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    out = np.zeros(x.size // g.ggml_blck_size(int(qtype)) * g.ggml_type_size(int(qtype)), dtype=np.uint8)
    assert q.tr_quantize(int(qtype), x.ctypes.data, out.ctypes.data, x.size) == 0
    return out


def test_f16_bf16_encoders_match_ggml(q, g):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2**32, size=1 << 20, dtype=np.uint64).astype(np.uint32).view(np.float32)
    ref16 = np.empty(x.size, dtype=np.uint16)
    g.ggml_fp32_to_fp16_row(x.ctypes.data, ref16.ctypes.data, x.size)
    ours16 = ours_quantize(q, T.F16, x).view(np.uint16)
    nan = np.isnan(x)  # NaN payloads may differ between encoders; NaN-ness may not
    assert np.array_equal(ours16[~nan], ref16[~nan])
    assert np.isnan(ours16[nan].view(np.float16)).all() and np.isnan(ref16[nan].view(np.float16)).all()
    refbf = np.empty(x.size, dtype=np.uint16)
    g.ggml_fp32_to_bf16_row_ref(x.ctypes.data, refbf.ctypes.data, x.size)
    assert np.array_equal(ours_quantize(q, T.BF16, x).view(np.uint16), refbf)


def test_quantize_model_weights_like_ggml(q, g, model_reader):
    """Real weight distributions: a few of the model's matrices, dequantized,
    then quantized to every format by us and by ggml."""
    picked = [t for t in model_reader.tensors if t.name in ("blk.0.attn_q.weight", "blk.5.ffn_down.weight",
                                                      "blk.17.attn_output.weight", "blk.3.ffn_gate.weight")]
    assert len(picked) == 4
    for t in picked:
        x = np.asarray(quants.dequantize(np.asarray(t.data), t.tensor_type), dtype=np.float32).ravel()
        x = x[: (x.size // 256) * 256][: 256 * 1024]
        for qtype in QUANT_TYPES:
            assert_same_bytes(ours_quantize_any(q, g, qtype, x), ggml_quantize(g, qtype, x), qtype,
                              g.ggml_type_size(int(qtype)))
