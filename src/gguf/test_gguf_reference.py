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


def compare_with_reader(lib, path, check_data=True):
    r, fields = reader_fields(path)
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


def test_real_model_matches_gguf_reader(lib, model_path):
    g, r = compare_with_reader(lib, model_path, check_data=False)
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
