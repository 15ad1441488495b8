#!/usr/bin/env python3
"""Write the seed corpus of the GGUF reader's fuzzer (tests/fuzz/fuzz_gguf/):
a few tiny valid GGUF files made with the gguf package's GGUFWriter, each
under 4 KB (named without .gguf: *.gguf is git-ignored), covering every value type, arrays (nested too), a custom
alignment, version 2, a file without tensors and several tensor types.

Usage: python3 scripts/make_fuzz_seeds.py [OUT_DIR]"""
import os
import sys

import numpy as np
import gguf

G = gguf.GGUFValueType
Q = gguf.GGMLQuantizationType


def write(path, fill, version=3):
    w = gguf.GGUFWriter(path, "llama")
    fill(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if version != 3:  # GGUFWriter writes v3; v2 differs only in the version field
        with open(path, "r+b") as f:
            f.seek(4)
            f.write(version.to_bytes(4, "little"))
    assert os.path.getsize(path) < 4096, path


def all_types(w):
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -3)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -300)
    w.add_uint32("t.u32", 70000)
    w.add_int32("t.i32", -70000)
    w.add_float32("t.f32", 0.5)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_uint64("t.u64", 2**40)
    w.add_int64("t.i64", -2**40)
    w.add_float64("t.f64", 2.5)
    w.add_array("t.tokens", ["<s>", "</s>", "a", "▁b"])
    w.add_key_value("t.scores", [0.0, -1.0, -2.0, -3.0], G.ARRAY, sub_type=G.FLOAT32)
    w.add_key_value("t.types", [3, 3, 1, 1], G.ARRAY, sub_type=G.INT32)
    w.add_tensor("a", np.arange(8, dtype=np.float32).reshape(2, 4))


def nested(w):
    w.add_key_value("n.ints", [[1, 2], [3]], G.ARRAY)
    w.add_key_value("n.strs", [["x"], ["y", "z"]], G.ARRAY)
    w.add_key_value("n.bools", [True, False], G.ARRAY, sub_type=G.BOOL)
    w.add_tensor("b", np.ones(4, dtype=np.float16))


def quantized(w):
    w.add_custom_alignment(64)
    rng = np.random.default_rng(1)
    for qt, rows in ((Q.Q8_0, 2), (Q.Q4_0, 1), (Q.Q4_K, 1), (Q.Q6_K, 1)):
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        ne0 = 256 if bs == 256 else 64
        w.add_tensor(f"q.{qt.name.lower()}", rng.integers(0, 256, (rows, ne0 // bs * ts), dtype=np.uint8),
                     raw_dtype=qt)
    w.add_tensor("i", np.arange(6, dtype=np.int32).reshape(1, 2, 3), raw_dtype=Q.I32)


def metadata_only(w):
    w.add_string("general.name", "no tensors")
    w.add_array("general.tags", ["a", "b"])


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fuzz",
                                                             "fuzz_gguf")
    os.makedirs(out, exist_ok=True)
    write(os.path.join(out, "all_types"), all_types)
    write(os.path.join(out, "nested"), nested)
    write(os.path.join(out, "quantized_align64"), quantized)
    write(os.path.join(out, "metadata_only"), metadata_only)
    write(os.path.join(out, "v2"), nested, version=2)


if __name__ == "__main__":
    main()
