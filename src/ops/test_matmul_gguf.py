"""tr_matmul against an independent reference: the gguf package's numpy
dequantizer applied to the same random weight bytes, multiplied in float64.
The only allowed difference is the rounding of the activations to the format
each weight type pairs with (int8 blocks of 32 or 256, or half / bfloat16),
bounded per output by sum |w| * (half a quantization step of its block)."""
import ctypes

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T, GGML_QUANT_SIZES
from gguf.quants import dequantize

# (type, byte offsets of fp16 scales in a block, activation block)
CASES = [
    (T.F32, [], 1), (T.F16, [], 1), (T.BF16, [], 1),
    (T.Q8_0, [0], 32), (T.Q4_0, [0], 32), (T.Q4_1, [0, 2], 32), (T.Q5_0, [0], 32), (T.Q5_1, [0, 2], 32),
    (T.Q2_K, [80, 82], 256), (T.Q3_K, [108], 256), (T.Q4_K, [0, 2], 256), (T.Q5_K, [0, 2], 256),
    (T.Q6_K, [208], 256), (T.TQ1_0, [52], 256), (T.TQ2_0, [64], 256),
]


def random_weights(rng, qtype, scales, rows, cols):
    blck, bsize = GGML_QUANT_SIZES[qtype]
    if qtype == T.F32:
        return rng.uniform(-1, 1, (rows, cols)).astype(np.float32).view(np.uint8).reshape(rows, -1)
    if qtype == T.F16:
        return rng.uniform(-1, 1, (rows, cols)).astype(np.float16).view(np.uint8).reshape(rows, -1)
    if qtype == T.BF16:
        f = rng.uniform(-1, 1, (rows, cols)).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(rows, -1)
    nb = rows * cols // blck
    b = rng.integers(0, 256, (nb, bsize), dtype=np.uint8)
    for off in scales:
        d = rng.uniform(0.5, 1.0, nb).astype(np.float16) / np.float16(64)
        b[:, off:off + 2] = d.view(np.uint8).reshape(nb, 2)
    return b.reshape(rows, -1)


def act_step(x, qtype, ablk):
    """Largest rounding error of each activation in the format it is converted to."""
    if qtype == T.F32:
        return np.abs(x) * 1e-7
    if qtype == T.F16:
        return np.abs(x) * 2.0 ** -11 + 2.0 ** -25
    if qtype == T.BF16:
        return np.abs(x) * 2.0 ** -8
    amax = np.abs(x.reshape(x.shape[0], -1, ablk)).max(axis=2)
    return np.repeat(amax / 127 * 0.5 * 1.001, ablk, axis=1)


@pytest.mark.parametrize("qtype,scales,ablk", CASES, ids=[c[0].name for c in CASES])
@pytest.mark.parametrize("threads", [1, 2])
def test_matmul_matches_gguf_dequantize(lib, qtype, scales, ablk, threads):
    rng = np.random.default_rng(int(qtype) * 7 + threads)
    blck = GGML_QUANT_SIZES[qtype][0]
    cols = max(blck, 256) * 2
    rows, nt = 37, 5
    w = np.ascontiguousarray(random_weights(rng, qtype, scales, rows, cols))
    x = rng.uniform(-1, 1, (nt, cols)).astype(np.float32)
    y = np.zeros((nt, rows), dtype=np.float32)

    lib.tr_pool_new.restype = ctypes.c_void_p
    lib.tr_pool_new.argtypes = [ctypes.c_int]
    lib.tr_pool_free.argtypes = [ctypes.c_void_p]
    lib.tr_matmul.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                              ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
    pool = lib.tr_pool_new(threads)
    try:
        lib.tr_matmul(pool, int(qtype), w.ctypes.data, rows, cols, x.ctypes.data, nt, y.ctypes.data)
    finally:
        lib.tr_pool_free(pool)

    wf = dequantize(w.reshape(-1), qtype).reshape(rows, cols).astype(np.float64)
    want = x.astype(np.float64) @ wf.T
    bound = act_step(x.astype(np.float64), qtype, ablk) @ np.abs(wf).T
    err = np.abs(y - want)
    assert np.all(err <= bound + 1e-4 * (1 + np.abs(want))), \
        f"{qtype.name}: max err {err.max():.4g}, bound there {bound.flat[err.argmax()]:.4g}"
    # and the result is not trivially zero
    assert np.abs(want).max() > 0.1
