"""ctypes binding of the engine's public API (include/trinity.h): load a model,
make a context, decode token ids, read logits. Used by the parity tests."""
import ctypes
import os

import numpy as np


class Error(ctypes.Structure):
    _fields_ = [("msg", ctypes.c_char * 512)]


class ContextParams(ctypes.Structure):
    _fields_ = [("n_ctx", ctypes.c_int32), ("n_batch", ctypes.c_int32),
                ("n_seq_max", ctypes.c_int32), ("n_threads", ctypes.c_int32),
                ("n_ctx_seq", ctypes.c_int32), ("kv_block", ctypes.c_int32), ("prefix_cache", ctypes.c_bool),
                ("type_k", ctypes.c_int32), ("type_v", ctypes.c_int32),  # 0: f16
                ("n_sinks", ctypes.c_int32), ("n_window", ctypes.c_int32),
                ("no_kv_rot", ctypes.c_bool)]  # include/trinity.h's layout


class Batch(ctypes.Structure):
    _fields_ = [("n_tokens", ctypes.c_int32), ("token", ctypes.POINTER(ctypes.c_int32)),
                ("pos", ctypes.POINTER(ctypes.c_int32)), ("seq_id", ctypes.POINTER(ctypes.c_int32)),
                ("logits", ctypes.POINTER(ctypes.c_int8))]


def load_lib(path=None):
    lib = ctypes.CDLL(path or os.environ.get("TRINITY_LIB", os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", "libtrinity.so")))
    vp = ctypes.c_void_p
    lib.tr_model_load.argtypes = [ctypes.c_char_p, ctypes.POINTER(vp), ctypes.POINTER(Error)]
    lib.tr_model_load_params.argtypes = [ctypes.c_char_p, ctypes.POINTER(ModelParams), ctypes.POINTER(vp),
                                         ctypes.POINTER(Error)]
    lib.tr_model_repacked_bytes.argtypes = [vp]
    lib.tr_model_repacked_bytes.restype = ctypes.c_uint64
    lib.tr_model_copied_bytes.argtypes = [vp]
    lib.tr_model_copied_bytes.restype = ctypes.c_uint64
    lib.tr_model_free.argtypes = [vp]
    lib.tr_model_n_vocab.argtypes = [vp]
    lib.tr_context_new.argtypes = [vp, ctypes.POINTER(ContextParams), ctypes.POINTER(vp), ctypes.POINTER(Error)]
    lib.tr_context_free.argtypes = [vp]
    lib.tr_decode.argtypes = [vp, ctypes.POINTER(Batch), ctypes.POINTER(Error)]
    lib.tr_get_logits.argtypes = [vp, ctypes.c_int32]
    lib.tr_get_logits.restype = ctypes.POINTER(ctypes.c_float)
    lib.tr_kv_seq_rm.argtypes = [vp, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32]
    lib.tr_kv_seq_rm.restype = ctypes.c_bool
    lib.tr_kv_seq_len.argtypes = [vp, ctypes.c_int32]
    return lib


class EngineError(RuntimeError):
    pass


class ModelParams(ctypes.Structure):  # tr_model_params
    _fields_ = [("no_repack", ctypes.c_bool)]


class Model:
    def __init__(self, lib, path, no_repack=False):
        self.lib = lib
        self.ptr = ctypes.c_void_p()
        err = Error()
        p = ModelParams(no_repack)
        st = lib.tr_model_load_params(path.encode(), ctypes.byref(p), ctypes.byref(self.ptr), ctypes.byref(err))
        if st != 0:
            raise EngineError(err.msg.decode())
        self.n_vocab = lib.tr_model_n_vocab(self.ptr)
        self.repacked_bytes = lib.tr_model_repacked_bytes(self.ptr)
        self.copied_bytes = lib.tr_model_copied_bytes(self.ptr)

    def close(self):
        if self.ptr:
            self.lib.tr_model_free(self.ptr)
            self.ptr = None


class Context:
    def __init__(self, model, n_ctx=512, n_batch=512, n_seq_max=1, n_threads=2, kv_block=0, type_k=0, type_v=0,
                 no_kv_rot=False):
        self.lib, self.model = model.lib, model
        self.ptr = ctypes.c_void_p()
        p = ContextParams(n_ctx, n_batch, n_seq_max, n_threads, kv_block=kv_block, type_k=type_k, type_v=type_v,
                          no_kv_rot=no_kv_rot)
        err = Error()
        st = self.lib.tr_context_new(model.ptr, ctypes.byref(p), ctypes.byref(self.ptr), ctypes.byref(err))
        if st != 0:
            raise EngineError(err.msg.decode())

    def decode(self, tokens, pos, seq=None, logits=None):
        n = len(tokens)
        tok = (ctypes.c_int32 * n)(*tokens)
        ps = (ctypes.c_int32 * n)(*pos)
        sq = (ctypes.c_int32 * n)(*(seq if seq is not None else [0] * n))
        lg = ctypes.cast((ctypes.c_int8 * n)(*logits), ctypes.POINTER(ctypes.c_int8)) if logits is not None else None
        b = Batch(n, tok, ps, sq, lg)
        err = Error()
        st = self.lib.tr_decode(self.ptr, ctypes.byref(b), ctypes.byref(err))
        if st != 0:
            raise EngineError(err.msg.decode())

    def logits(self, i):
        p = self.lib.tr_get_logits(self.ptr, i)
        if not p:
            return None
        return np.ctypeslib.as_array(p, shape=(self.model.n_vocab,)).copy()

    def eval_all(self, tokens, n_batch=None):
        """Logits of every position of one sequence from position 0."""
        n_batch = n_batch or len(tokens)
        out = []
        for s in range(0, len(tokens), n_batch):
            chunk = tokens[s:s + n_batch]
            self.decode(chunk, list(range(s, s + len(chunk))), logits=[1] * len(chunk))
            out.extend(self.logits(i) for i in range(len(chunk)))
        return np.stack(out)

    def greedy(self, prompt, n):
        """Prompt then n greedy tokens (stops early at the context's end)."""
        self.decode(prompt, list(range(len(prompt))))
        pos, out = len(prompt), []
        for _ in range(n):
            t = int(np.argmax(self.logits(-1)))
            out.append(t)
            self.decode([t], [pos])
            pos += 1
        return out

    def close(self):
        if self.ptr:
            self.lib.tr_context_free(self.ptr)
            self.ptr = None
