"""ctypes view of the GGUF section of include/trinity.h, for the Python tests.

Turns our reader's values into plain Python values (int, float, bool, str,
lists; nested arrays as nested lists) so they can be compared with the gguf
package's GGUFReader."""
import ctypes
from ctypes import POINTER, c_bool, c_char_p, c_double, c_int, c_int64, c_uint32, c_uint64, c_void_p

UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
INTS = {UINT8, INT8, UINT16, INT16, UINT32, INT32, UINT64, INT64}
FLOATS = {FLOAT32, FLOAT64}


class TrError(ctypes.Structure):
    _fields_ = [("msg", ctypes.c_char * 512)]


class TrStr(ctypes.Structure):
    _fields_ = [("ptr", c_void_p), ("len", c_uint64)]


class Value(ctypes.Structure):
    pass


class Arr(ctypes.Structure):
    _fields_ = [("type", c_int), ("n", c_uint64), ("data", c_void_p), ("str_off", POINTER(c_uint64)),
                ("items", POINTER(Value))]


class _U(ctypes.Union):
    _fields_ = [("u64", c_uint64), ("i64", c_int64), ("f64", c_double), ("b", c_bool), ("str", TrStr),
                ("arr", Arr)]


Value._fields_ = [("type", c_int), ("v", _U)]


class Tensor(ctypes.Structure):
    _fields_ = [("name", c_char_p), ("type", c_int), ("n_dims", c_int), ("ne", c_int64 * 4),
                ("offset", c_uint64), ("nbytes", c_uint64), ("data", c_void_p)]


def bind(lib):
    """Declare the signatures we use on a CDLL of libtrinity.so; returns it."""
    P = c_void_p
    sigs = {
        "tr_gguf_open": (c_int, [c_char_p, POINTER(P), POINTER(TrError)]),
        "tr_gguf_open_memory": (c_int, [c_void_p, ctypes.c_size_t, c_char_p, POINTER(P), POINTER(TrError)]),
        "tr_gguf_close": (None, [P]),
        "tr_gguf_version": (c_uint32, [P]),
        "tr_gguf_alignment": (c_uint64, [P]),
        "tr_gguf_data_offset": (c_uint64, [P]),
        "tr_gguf_file_size": (c_uint64, [P]),
        "tr_gguf_n_kv": (c_int64, [P]),
        "tr_gguf_kv_key": (c_char_p, [P, c_int64]),
        "tr_gguf_kv_value": (POINTER(Value), [P, c_int64]),
        "tr_gguf_find_kv": (c_int64, [P, c_char_p]),
        "tr_gguf_n_tensors": (c_int64, [P]),
        "tr_gguf_tensor_at": (POINTER(Tensor), [P, c_int64]),
        "tr_gguf_find_tensor": (POINTER(Tensor), [P, c_char_p]),
        "tr_gguf_arr_str": (TrStr, [POINTER(Value), c_uint64]),
        "tr_gguf_arr_int": (c_int64, [POINTER(Value), c_uint64]),
        "tr_gguf_arr_float": (c_double, [POINTER(Value), c_uint64]),
        "tr_gguf_writer_new": (P, []),
        "tr_gguf_writer_free": (None, [P]),
        "tr_gguf_writer_set": (c_int, [P, c_char_p, POINTER(Value), POINTER(TrError)]),
        "tr_gguf_writer_set_str": (c_int, [P, c_char_p, c_char_p, POINTER(TrError)]),
        "tr_gguf_writer_set_u32": (c_int, [P, c_char_p, c_uint32, POINTER(TrError)]),
        "tr_gguf_writer_set_f32": (c_int, [P, c_char_p, ctypes.c_float, POINTER(TrError)]),
        "tr_gguf_writer_copy_kv": (c_int, [P, P, POINTER(TrError)]),
        "tr_gguf_writer_add_tensor": (c_int, [P, c_char_p, c_int, c_int, POINTER(c_int64), c_void_p,
                                              POINTER(TrError)]),
        "tr_gguf_writer_write": (c_int, [P, c_char_p, POINTER(TrError)]),
    }
    for name, (res, args) in sigs.items():
        if not hasattr(lib, name):
            continue
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args
    return lib


def _elem(lib, vp, etype, j):
    if etype == STRING:
        s = lib.tr_gguf_arr_str(vp, j)
        return ctypes.string_at(s.ptr, s.len).decode("utf-8") if s.len else ""
    if etype == BOOL:
        return bool(lib.tr_gguf_arr_int(vp, j))
    if etype in FLOATS:
        return lib.tr_gguf_arr_float(vp, j)
    if etype == UINT64:  # tr_gguf_arr_int returns the bits as int64
        return lib.tr_gguf_arr_int(vp, j) % 2**64
    return lib.tr_gguf_arr_int(vp, j)


def to_py(lib, vp):
    """A tr_gguf_value* as a Python value; arrays as lists (nested for arrays of arrays)."""
    v = vp.contents
    t = v.type
    if t in (UINT8, UINT16, UINT32, UINT64):
        return v.v.u64
    if t in (INT8, INT16, INT32, INT64):
        return v.v.i64
    if t in FLOATS:
        return v.v.f64
    if t == BOOL:
        return bool(v.v.b)
    if t == STRING:
        return ctypes.string_at(v.v.str.ptr, v.v.str.len).decode("utf-8") if v.v.str.len else ""
    assert t == ARRAY, t
    a = v.v.arr
    if a.type == ARRAY:
        return [to_py(lib, ctypes.pointer(a.items[j])) for j in range(a.n)]
    return [_elem(lib, vp, a.type, j) for j in range(a.n)]


def types_of(vp):
    """The type chain of a value like GGUFReader's field.types: [ARRAY, ARRAY, ..., leaf]."""
    v = vp.contents
    out = [v.type]
    while v.type == ARRAY:
        out.append(v.v.arr.type)
        if v.v.arr.type != ARRAY or v.v.arr.n == 0:
            break
        v = v.v.arr.items[0]
    return out


def flatten(x):
    if isinstance(x, list):
        return [y for e in x for y in flatten(e)]
    return [x]


class Gguf:
    """An open file through our reader (closed on close() or garbage collection)."""

    def __init__(self, lib, path=None, data=None, name=b"mem"):
        self.lib = bind(lib)
        self.h = c_void_p()
        self.err = TrError()
        if data is not None:
            self._buf = ctypes.create_string_buffer(bytes(data), len(data)) if len(data) else None
            self.status = lib.tr_gguf_open_memory(self._buf, len(data), name, ctypes.byref(self.h),
                                                  ctypes.byref(self.err))
        else:
            self.status = lib.tr_gguf_open(str(path).encode(), ctypes.byref(self.h), ctypes.byref(self.err))
        self.error = self.err.msg.decode("utf-8", "replace")

    def ok(self):
        return self.status == 0

    def kvs(self):
        lib, h = self.lib, self.h
        out = {}
        for i in range(lib.tr_gguf_n_kv(h)):
            key = lib.tr_gguf_kv_key(h, i).decode("utf-8")
            vp = lib.tr_gguf_kv_value(h, i)
            out[key] = (types_of(vp), to_py(lib, vp))
        return out

    def tensors(self, with_data=True):
        lib, h = self.lib, self.h
        out = []
        for i in range(lib.tr_gguf_n_tensors(h)):
            t = lib.tr_gguf_tensor_at(h, i).contents
            out.append(dict(name=t.name.decode("utf-8"), type=t.type, n_dims=t.n_dims,
                            ne=list(t.ne[:t.n_dims]), offset=t.offset, nbytes=t.nbytes,
                            data=ctypes.string_at(t.data, t.nbytes) if t.nbytes and with_data else b"",
                            abs_offset=lib.tr_gguf_data_offset(h) + t.offset))
        return out

    def close(self):
        if self.h:
            self.lib.tr_gguf_close(self.h)
            self.h = c_void_p()

    def __del__(self):
        self.close()


_NP = {UINT8: "<u1", INT8: "<i1", UINT16: "<u2", INT16: "<i2", UINT32: "<u4", INT32: "<i4", FLOAT32: "<f4",
       BOOL: "<u1", UINT64: "<u8", INT64: "<i8", FLOAT64: "<f8"}


class ValueBuilder:
    """Builds tr_gguf_value structs from Python values for the writer; keeps
    the buffers they point to alive as long as the builder lives."""

    def __init__(self):
        self.keep = []

    def _buf(self, b):
        buf = ctypes.create_string_buffer(bytes(b), max(len(b), 1))
        self.keep.append(buf)
        return ctypes.cast(buf, c_void_p).value

    def fill(self, v, types, x):
        """Fill Value v with x; types is the chain, e.g. [UINT32] or [ARRAY, ARRAY, STRING]."""
        import numpy as np
        t = types[0]
        v.type = t
        if t in (UINT8, UINT16, UINT32, UINT64):
            v.v.u64 = x
        elif t in (INT8, INT16, INT32, INT64):
            v.v.i64 = x
        elif t in FLOATS:
            v.v.f64 = x
        elif t == BOOL:
            v.v.b = bool(x)
        elif t == STRING:
            b = x.encode("utf-8")
            v.v.str.ptr = self._buf(b)
            v.v.str.len = len(b)
        else:
            et = types[1]
            v.v.arr.type = et
            v.v.arr.n = len(x)
            if et == STRING:
                blob, offs = bytearray(), []
                for s in x:
                    b = s.encode("utf-8")
                    offs.append(len(blob))
                    blob += len(b).to_bytes(8, "little") + b
                v.v.arr.data = self._buf(blob)
                off_arr = (c_uint64 * max(len(offs), 1))(*offs)
                self.keep.append(off_arr)
                v.v.arr.str_off = ctypes.cast(off_arr, POINTER(c_uint64))
            elif et == ARRAY:
                items = (Value * max(len(x), 1))()
                self.keep.append(items)
                for j, e in enumerate(x):
                    self.fill(items[j], types[1:], e)
                v.v.arr.items = ctypes.cast(items, POINTER(Value))
            else:
                v.v.arr.data = self._buf(np.array(x, dtype=_NP[et]).tobytes())
        return v

    def value(self, types, x):
        v = Value()
        self.keep.append(v)
        return self.fill(v, types, x)
