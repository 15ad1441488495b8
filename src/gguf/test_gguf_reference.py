"""Our GGUF reader and writer against the gguf package (GGUFReader / GGUFWriter).

(a) the real model: every key's type and value, every tensor's name, type,
    shape, offset and bytes, as GGUFReader sees them;
(b) round trips: files from our writer read by GGUFReader, files from
    GGUFWriter read by our reader — identical metadata and tensor bytes;
(c) `trinity info` on the real model."""
import ctypes
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf  # noqa: E402
import gguf_ctypes as gc  # noqa: E402


def reader_fields(path):
    """GGUFReader's view: {key: (types, value)}, arrays flattened as GGUFReader does."""
    r = gguf.GGUFReader(path)
    out = {}
    for key, f in r.fields.items():
        if key.startswith("GGUF."):  # the reader's pseudo-fields for the header
            continue
        out[key] = ([int(t) for t in f.types], f.contents())
    return r, out


def same_value(types, ours, theirs):
    leaf = types[-1]
    if types[0] == gc.ARRAY:
        ours = gc.flatten(ours)
        if len(ours) != len(theirs):
            return False
        pairs = zip(ours, theirs)
    else:
        pairs = [(ours, theirs)]
    for a, b in pairs:
        if leaf == gc.FLOAT32:
            if not (a == b or (math.isnan(a) and math.isnan(b))):
                return False
        elif a != b:
            return False
    return True


def compare_with_reader(lib, path, check_data=True, reader=None):
    r, fields = reader or reader_fields(path)
    g = gc.Gguf(lib, path)
    assert g.ok(), g.error
    try:
        ours = g.kvs()
        assert list(ours) == list(fields), "keys differ (or their order)"
        for key, (types, value) in fields.items():
            otypes, ovalue = ours[key]
            assert otypes == types, f"{key}: types {otypes} vs {types}"
            assert same_value(types, ovalue, value), f"{key}: {str(ovalue)[:200]} vs {str(value)[:200]}"
        tensors = g.tensors(with_data=check_data)
        assert len(tensors) == len(r.tensors)
        for t, rt in zip(tensors, r.tensors):
            assert t["name"] == rt.name
            assert t["type"] == int(rt.tensor_type), t["name"]
            assert t["ne"] == [int(x) for x in rt.shape], t["name"]  # both in ggml order
            assert t["abs_offset"] == rt.data_offset, t["name"]
            assert t["nbytes"] == rt.n_bytes, t["name"]
            if check_data:
                assert t["data"] == rt.data.tobytes(), t["name"]
        return g, r
    finally:
        g.close()


@pytest.fixture(scope="module")
def real_reader(model_path):
    """GGUFReader over the real model, read once: it takes tens of seconds."""
    return reader_fields(model_path)


def test_real_model_matches_gguf_reader(lib, model_path, real_reader):
    g, r = compare_with_reader(lib, model_path, check_data=False, reader=real_reader)
    # Tensor data is a view into the mapping: spot-check bytes of a few tensors
    # (all of them would copy the whole file through ctypes).
    h = gc.Gguf(lib, model_path)
    assert h.ok(), h.error
    lib_ = h.lib
    assert lib_.tr_gguf_version(h.h) == 3
    assert lib_.tr_gguf_alignment(h.h) == r.alignment
    assert lib_.tr_gguf_file_size(h.h) == os.path.getsize(model_path)
    for i in (0, len(r.tensors) // 2, len(r.tensors) - 1):
        rt = r.tensors[i]
        t = lib_.tr_gguf_find_tensor(h.h, rt.name.encode()).contents
        assert ctypes.string_at(t.data, t.nbytes) == rt.data.tobytes(), rt.name
    assert lib_.tr_gguf_find_tensor(h.h, b"no.such.tensor") is None or \
        not lib_.tr_gguf_find_tensor(h.h, b"no.such.tensor")
    assert lib_.tr_gguf_find_kv(h.h, b"general.architecture") >= 0
    assert lib_.tr_gguf_find_kv(h.h, b"no.such.key") == -1
    h.close()


# (b) round trips ---------------------------------------------------------

G = gguf.GGUFValueType
# key -> (type chain, value): every value type, arrays of each, nested arrays,
# unicode, empty strings and extreme integers.
VALUES = {
    "t.u8": ([gc.UINT8], 255),
    "t.i8": ([gc.INT8], -128),
    "t.u16": ([gc.UINT16], 65535),
    "t.i16": ([gc.INT16], -32768),
    "t.u32": ([gc.UINT32], 4294967295),
    "t.i32": ([gc.INT32], -2147483648),
    "t.f32": ([gc.FLOAT32], 0.1),
    "t.bool": ([gc.BOOL], True),
    "t.bool_false": ([gc.BOOL], False),
    "t.str": ([gc.STRING], "héllo wörld ✓ 🦀 \"quoted\"\n"),
    "t.str_empty": ([gc.STRING], ""),
    "t.u64": ([gc.UINT64], 2**64 - 1),
    "t.i64": ([gc.INT64], -2**63),
    "t.f64": ([gc.FLOAT64], math.pi),
    "a.u8": ([gc.ARRAY, gc.UINT8], [0, 1, 255]),
    "a.i8": ([gc.ARRAY, gc.INT8], [-128, 0, 127]),
    "a.u16": ([gc.ARRAY, gc.UINT16], [1, 65535]),
    "a.i16": ([gc.ARRAY, gc.INT16], [-32768, 32767]),
    "a.u32": ([gc.ARRAY, gc.UINT32], [7, 4294967295]),
    "a.i32": ([gc.ARRAY, gc.INT32], list(range(-5, 300))),
    "a.f32": ([gc.ARRAY, gc.FLOAT32], [0.5, -1e30, 3.25]),
    "a.bool": ([gc.ARRAY, gc.BOOL], [True, False, True]),
    "a.str": ([gc.ARRAY, gc.STRING], ["<pad>", "", "▁the", "日本語", "a\x00b"]),
    "a.u64": ([gc.ARRAY, gc.UINT64], [0, 2**64 - 1]),
    "a.i64": ([gc.ARRAY, gc.INT64], [-2**63, 2**63 - 1]),
    "a.f64": ([gc.ARRAY, gc.FLOAT64], [math.e, -0.0]),
    "a.nested": ([gc.ARRAY, gc.ARRAY, gc.INT32], [[1, 2], [3], [4, 5, 6]]),
    "a.nested_str": ([gc.ARRAY, gc.ARRAY, gc.STRING], [["x", "yy"], ["ü"]]),
    "a.nested3": ([gc.ARRAY, gc.ARRAY, gc.ARRAY, gc.UINT8], [[[1], [2, 3]], [[4]]]),
}


def f32(x):
    return float(np.float32(x))


def expected(types, x):
    """What a reader returns for value x written as `types` (float32 rounding)."""
    if types[0] == gc.ARRAY:
        return [expected(types[1:], e) for e in x]
    return f32(x) if types[0] == gc.FLOAT32 else x


def rand_tensors():
    rng = np.random.default_rng(7)
    out = []
    # (name, type, ne in ggml order, raw bytes)
    a = rng.standard_normal((3, 8)).astype(np.float32)
    out.append(("t.f32", gguf.GGMLQuantizationType.F32, [8, 3], a.tobytes()))
    b = rng.standard_normal(5).astype(np.float16)
    out.append(("t.f16", gguf.GGMLQuantizationType.F16, [5], b.tobytes()))
    for qt, ne in ((gguf.GGMLQuantizationType.Q8_0, [64, 2]), (gguf.GGMLQuantizationType.Q4_K, [256, 3, 2]),
                   (gguf.GGMLQuantizationType.Q6_K, [512, 1])):
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        nbytes = ne[0] // bs * ts * int(np.prod(ne[1:]))
        out.append((f"t.{qt.name.lower()}", qt, ne, rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()))
    c = rng.integers(-1000, 1000, (2, 2, 2, 3)).astype(np.int32)
    out.append(("t.i32.4d", gguf.GGMLQuantizationType.I32, [3, 2, 2, 2], c.tobytes()))
    return out


def write_with_ours(lib, path, values, tensors, alignment=None):
    lib = gc.bind(lib)
    vb = gc.ValueBuilder()
    err = gc.TrError()
    w = lib.tr_gguf_writer_new()
    try:
        if alignment is not None:
            assert lib.tr_gguf_writer_set_u32(w, b"general.alignment", alignment, ctypes.byref(err)) == 0, err.msg
        for key, (types, x) in values.items():
            st = lib.tr_gguf_writer_set(w, key.encode(), ctypes.byref(vb.value(types, x)), ctypes.byref(err))
            assert st == 0, err.msg
        bufs = []
        for name, qt, ne, raw in tensors:
            buf = ctypes.create_string_buffer(raw, max(len(raw), 1))
            bufs.append(buf)
            nea = (ctypes.c_int64 * 4)(*ne, *([1] * (4 - len(ne))))
            st = lib.tr_gguf_writer_add_tensor(w, name.encode(), int(qt), len(ne), nea, buf, ctypes.byref(err))
            assert st == 0, err.msg
        st = lib.tr_gguf_writer_write(w, str(path).encode(), ctypes.byref(err))
        assert st == 0, err.msg
    finally:
        lib.tr_gguf_writer_free(w)


@pytest.mark.parametrize("alignment", [None, 64])
def test_our_writer_read_by_gguf_reader(lib, tmp_path, alignment):
    path = tmp_path / "ours.gguf"
    tensors = rand_tensors()
    write_with_ours(lib, path, VALUES, tensors, alignment)
    r = gguf.GGUFReader(path)
    assert r.alignment == (alignment or 32)
    fields = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    keys = list(VALUES) if alignment is None else ["general.alignment", *VALUES]
    assert list(fields) == keys
    for key, (types, x) in VALUES.items():
        f = fields[key]
        assert [int(t) for t in f.types] == types, key
        want = expected(types, x)
        got = f.contents()
        if types[0] == gc.ARRAY:
            want = gc.flatten(want)
        assert got == want, f"{key}: {got} vs {want}"
    assert [t.name for t in r.tensors] == [t[0] for t in tensors]
    for rt, (name, qt, ne, raw) in zip(r.tensors, tensors):
        assert rt.tensor_type == qt, name
        assert [int(x) for x in rt.shape] == ne, name
        assert rt.data.tobytes() == raw, name
        assert rt.data_offset % (alignment or 32) == 0
    # and our reader agrees with GGUFReader on the same file, field by field
    compare_with_reader(lib, path)
    # our reader returns the exact nested values too (GGUFReader flattens them)
    g = gc.Gguf(lib, path)
    assert g.ok(), g.error
    ours = g.kvs()
    for key, (types, x) in VALUES.items():
        assert ours[key] == (types, expected(types, x)), key
    g.close()


def test_gguf_writer_files_read_by_ours(lib, tmp_path):
    path = tmp_path / "theirs.gguf"
    w = gguf.GGUFWriter(path, "llama")
    for key, (types, x) in VALUES.items():
        if types[0] == gc.ARRAY and types[1] == gc.ARRAY:
            # GGUFWriter infers nested element types from Python types
            if types[-1] in (gc.INT32, gc.STRING):
                w.add_key_value(key, x, G.ARRAY)
            continue
        if types[0] == gc.ARRAY:
            w.add_key_value(key, x, G.ARRAY, sub_type=G(types[1]))
        else:
            w.add_key_value(key, x, G(types[0]))
    tensors = rand_tensors()
    for name, qt, ne, raw in tensors:
        arr = np.frombuffer(raw, dtype=np.uint8)
        if qt == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, arr.view(np.float32).reshape(ne[::-1]))
        elif qt == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, arr.view(np.float16).reshape(ne[::-1]))
        elif qt == gguf.GGMLQuantizationType.I32:
            w.add_tensor(name, arr.view(np.int32).reshape(ne[::-1]), raw_dtype=qt)
        else:
            bs, ts = gguf.GGML_QUANT_SIZES[qt]
            w.add_tensor(name, arr.reshape(*ne[:0:-1], ne[0] // bs * ts), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    compare_with_reader(lib, path)
    g = gc.Gguf(lib, path)
    assert g.ok(), g.error
    ours = g.kvs()
    assert ours["general.architecture"] == ([gc.STRING], "llama")
    for key, (types, x) in VALUES.items():
        if key in ours:
            assert ours[key] == (types, expected(types, x)), key
    assert "a.nested" in ours and "a.nested_str" in ours
    ts = {t["name"]: t for t in g.tensors()}
    for name, qt, ne, raw in tensors:
        assert ts[name]["type"] == int(qt) and ts[name]["ne"] == ne and ts[name]["data"] == raw, name
    g.close()


def test_copy_kv_keeps_the_real_models_metadata(lib, model_path, tmp_path, real_reader):
    """copy_kv of the real model (262k-string vocabulary) into a new file:
    GGUFReader sees the same metadata as in the original."""
    lib = gc.bind(lib)
    src = gc.Gguf(lib, model_path)
    assert src.ok(), src.error
    err = gc.TrError()
    w = lib.tr_gguf_writer_new()
    assert lib.tr_gguf_writer_copy_kv(w, src.h, ctypes.byref(err)) == 0, err.msg
    t = lib.tr_gguf_find_tensor(src.h, b"output_norm.weight").contents
    st = lib.tr_gguf_writer_add_tensor(w, b"output_norm.weight", t.type, t.n_dims, t.ne, t.data, ctypes.byref(err))
    assert st == 0, err.msg
    out = tmp_path / "copy.gguf"
    assert lib.tr_gguf_writer_write(w, str(out).encode(), ctypes.byref(err)) == 0, err.msg
    lib.tr_gguf_writer_free(w)
    r0, fields0 = real_reader
    r1, fields1 = reader_fields(out)
    assert list(fields1) == list(fields0)
    for key in fields0:
        assert fields1[key][0] == fields0[key][0], key
        assert fields1[key][1] == fields0[key][1] or key == "tokenizer.ggml.scores" and \
            np.array_equal(np.array(fields1[key][1]), np.array(fields0[key][1]), equal_nan=True), key
    rt0 = next(t for t in r0.tensors if t.name == "output_norm.weight")
    assert r1.tensors[0].data.tobytes() == rt0.data.tobytes()
    src.close()


def test_writer_rejects_bad_input(lib, tmp_path):
    lib = gc.bind(lib)
    err = gc.TrError()
    w = lib.tr_gguf_writer_new()
    vb = gc.ValueBuilder()
    assert lib.tr_gguf_writer_set_u32(w, b"general.alignment", 48, ctypes.byref(err)) != 0
    assert b"general.alignment" in err.msg
    assert lib.tr_gguf_writer_set(w, b"x", ctypes.byref(vb.value([gc.UINT8], 256)), ctypes.byref(err)) != 0
    ne = (ctypes.c_int64 * 4)(33, 1, 1, 1)
    buf = ctypes.create_string_buffer(64)
    assert lib.tr_gguf_writer_add_tensor(w, b"q", int(gguf.GGMLQuantizationType.Q8_0), 1, ne, buf,
                                         ctypes.byref(err)) != 0
    assert b"block size" in err.msg
    ne = (ctypes.c_int64 * 4)(4, 1, 1, 1)
    assert lib.tr_gguf_writer_add_tensor(w, b"a", 0, 1, ne, buf, ctypes.byref(err)) == 0
    assert lib.tr_gguf_writer_add_tensor(w, b"a", 0, 1, ne, buf, ctypes.byref(err)) != 0
    assert b"duplicate" in err.msg
    assert lib.tr_gguf_writer_add_tensor(w, b"b", 0, 5, ne, buf, ctypes.byref(err)) != 0
    assert lib.tr_gguf_writer_write(w, str(tmp_path / "no" / "such" / "dir.gguf").encode(), ctypes.byref(err)) != 0
    assert b"dir.gguf" in err.msg
    assert list(tmp_path.iterdir()) == []
    lib.tr_gguf_writer_free(w)


# (c) trinity info ----------------------------------------------------------

def test_info_lists_every_key_and_tensor(trinity_bin, model_path, real_reader):
    from conftest import run_trinity
    p = run_trinity("info", model_path)
    assert p.returncode == 0, p.stderr
    r, fields = real_reader
    lines = p.stdout.splitlines()
    assert lines[0].startswith(f"{model_path}: GGUF v3, {len(fields)} keys, {len(r.tensors)} tensors, alignment 32")
    body = p.stdout
    for key in fields:
        assert f"  {key} " in body, key
    rows = [l.split() for l in lines if l[:5].strip().isdigit() and len(l.split()) >= 5 and
            l.split()[1] in {t.name for t in r.tensors}]
    assert len(rows) == len(r.tensors)
    for row, t in zip(rows, r.tensors):
        assert row[1] == t.name
        assert row[2] == t.tensor_type.name
        assert " ".join(row[3:-2]) == " x ".join(str(int(x)) for x in t.shape)
        assert int(row[-1]) == t.n_bytes
        assert int(row[-2]) == t.data_offset - r.data_offset
    assert '[262144 strings] "<pad>", "<eos>"' in body
    assert f"total: {len(r.tensors)} tensors" in body


def test_info_on_a_bad_file_is_one_line_and_exit_1(trinity_bin, tmp_path):
    from conftest import run_trinity
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x01\x00\x00\x00" + b"\x00" * 16)
    p = run_trinity("info", bad)
    assert p.returncode == 1
    assert p.stdout == ""
    assert p.stderr.count("\n") == 1 and str(bad) in p.stderr and "version 1" in p.stderr
    p = run_trinity("info")
    assert p.returncode == 2
