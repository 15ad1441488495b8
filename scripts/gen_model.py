#!/usr/bin/env python3
"""Write a random-weight GGUF model of a given architecture, shape and weight type.

The files are what llama.cpp (and Trinity) load like a real model: the
architecture's hyperparameters, every tensor of the architecture with the
shapes llama.cpp expects, and a small synthetic SentencePiece vocabulary
(byte fallback tokens, control tokens, English words, letter pieces).

Output is deterministic: the same arguments give the same bytes (the parity
fixtures store the file's SHA-256 and check it).

  scripts/gen_model.py --arch llama --type Q8_0 -o /tmp/m.gguf
  scripts/gen_model.py --arch gpt2 | phi3 | gemma2 | qwen3moe --type F16 -o /tmp/m.gguf
  scripts/gen_model.py --arch llama --swa 16 -o /tmp/mistral.gguf      (Mistral's sliding_window key)
  scripts/gen_model.py --arch llama --experts 8 -o /tmp/mixtral.gguf   (Mixtral: 8 experts, top 2)
  scripts/gen_model.py --arch qwen3moe --shape moe-bench --type Q4_K_M -o /tmp/moe.gguf
  scripts/gen_model.py --arch phi3 --shape micro --type Q8_0 -o seed   (fuzz seeds: tests/fuzz/fuzz_model)
  scripts/gen_model.py --arch llama --shape tinyllama --type Q4_K_M -o /tmp/tl.gguf
  scripts/gen_model.py --arch bitnet --type TQ2_0 -o /tmp/bitnet.gguf     (ternary matrices, see below)
  scripts/gen_model.py --arch mamba | mamba2 --type Q8_0 -o /tmp/m.gguf   (state-space: tiny, micro)
  scripts/gen_model.py --arch mamba --shape mamba-130m --type Q8_0 -o /tmp/m.gguf   (bench/compare.py's 'mamba')

Weights are scaled so activations keep their size through the layers
(normal * 1/sqrt(fan_in)), norms near 1, and logits spread over a few units:
argmax decisions are then clear, not near-ties.

bitnet: every layer matrix is ternary as a BitNet b1.58 model's, {-1, 0, 1}
times one scale per matrix (the mean |w| of a normal draw, rounded as
llama.cpp's convert_hf_to_gguf does). Even layers keep the scale folded into
the values (as that converter writes them); odd layers store the bare
{-1, 0, 1} and the scale as a separate one-float {name}.scale tensor, which
llama.cpp multiplies into the product. At TQ1_0 / TQ2_0 the matrices then
dequantize to exactly the F16 file's values (a block's scale is its largest
magnitude, the matrix's scale rounded to F16, or 1), and token_embd, which
BitNet keeps in full precision, is F16.
"""
import argparse
import hashlib
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

ARCHES = ("llama", "qwen2", "qwen3", "qwen3moe", "olmoe", "gemma2", "gemma3", "gpt2", "phi3", "bitnet", "mamba",
          "mamba2", "granitehybrid")
SSM = ("mamba", "mamba2", "granitehybrid")
GEMMA = ("gemma2", "gemma3")

# name -> hyperparameters. head_dim may differ from n_embd / n_head (key_length).
SHAPES = {
    "tiny": dict(n_embd=256, n_layer=2, n_head=4, n_head_kv=2, head_dim=64, n_ff=512, n_vocab=512),
    # the fuzz seeds' shape (tests/fuzz/fuzz_model): small files, every tensor of the architecture
    "micro": dict(n_embd=32, n_layer=2, n_head=2, n_head_kv=1, head_dim=16, n_ff=64, n_vocab=300, n_ctx=64,
                  sliding_window=4),
    # Qwen3-30B-A3B's proportions at a size this machine benchmarks: 64
    # experts, top 8, experts of 512 (bench/moe.py).
    "moe-bench": dict(n_embd=1024, n_layer=8, n_head=16, n_head_kv=4, head_dim=64, n_ff=3072, n_vocab=8192,
                      n_expert=64, n_expert_used=8, n_ff_exp=512),
    "tinyllama": dict(n_embd=2048, n_layer=22, n_head=32, n_head_kv=4, head_dim=64, n_ff=5632, n_vocab=32000),
    # Mamba-130M's shape (state-space; bench/compare.py's 'mamba'), its vocabulary cut to 32000
    "mamba-130m": dict(n_embd=768, n_layer=24, n_head=0, n_head_kv=0, head_dim=0, n_ff=0, n_vocab=32000,
                       d_inner=1536, d_state=16, d_conv=4, dt_rank=48),
}

# State-space shapes (Mamba, Mamba-2) where the shape does not give them:
# d_inner = 2 * n_embd (the only expansion llama.cpp's mamba loader accepts),
# conv kernel 4; Mamba: d_state 16, dt_rank ceil(n_embd / 16) (the real
# models' rule); Mamba-2: heads of 64 (fewer in micro), 2 groups of B and C,
# d_state 64 (so llama.cpp's scan takes its 8-wide SIMD path).
SSM_DEFAULTS = {
    "mamba": dict(d_state=16, d_conv=4),
    "mamba2": dict(d_state=64, d_conv=4, n_group=2),
    "granitehybrid": dict(d_state=64, d_conv=4, n_group=1),
}

# Granite 4.0-H's shape in small: Mamba-2 layers with attention layers among
# them (here 1 and 3 of 4: the KV pool holds those two), one group of B and
# C, no RoPE (rope.scaling.finetuned false, as the releases), Granite's
# multipliers at values that make each one matter: embeddings x12 (and
# token_embd scaled by 1/12 to match), residual branches x0.5, q.k x0.0625
# (not the default 1/sqrt(64)), logits /4.
GRANITE = dict(attn_layers=(1, 3), embedding_scale=12.0, residual_scale=0.5, attention_scale=0.0625,
               logit_scale=4.0)

# Per-architecture variations of the tiny shape, so that each one exercises
# what makes the architecture different: Gemma 3 has 6 layers (5 local, 1
# global), one KV head (MQA), head_dim * n_head != n_embd and a short window.
TINY_OVERRIDES = {
    "qwen3": dict(head_dim=128),
    "gemma3": dict(n_layer=6, n_head_kv=1, head_dim=128, sliding_window=16),
    # Gemma 2: 4 layers alternating local/global, GQA, head_dim * n_head != n_embd.
    "gemma2": dict(n_layer=4, head_dim=128, sliding_window=16),
    # GPT-2: multi-head attention (no GQA), learned positions for 512 tokens.
    "gpt2": dict(n_head_kv=4, n_ctx=512),
    # Phi-3 (as Phi-4-mini): GQA, RoPE over 3/4 of each head, LongRoPE.
    "phi3": dict(n_rot=48),
    # Qwen3-MoE: 8 experts, top 2, experts of 256 (rows whole Q4_K blocks).
    "qwen3moe": dict(head_dim=128, n_expert=8, n_expert_used=2, n_ff_exp=256),
    # OLMoE: multi-head attention (as OLMoE-1B-7B), 8 experts of n_ff, top 2.
    "olmoe": dict(n_head_kv=4, n_expert=8, n_expert_used=2, n_ff_exp=512),
    "granitehybrid": dict(n_layer=4),
}


def ssm_tensors(arch, hp, rng, mat, vec, tensors):
    """Mamba / Mamba-2 layers as llama.cpp loads them (src/models/mamba*.cpp):
    in-projection, depthwise conv (F32, never quantized), dt, A = -exp(A_log)
    (S4D-real's 1..d_state for Mamba), D, out-projection; Mamba-2 adds the
    grouped norm. dt's bias is an inverse softplus of steps around 0.1-0.2,
    as trained models' are, so the state remembers over many tokens."""
    E, L = hp["n_embd"], hp["n_layer"]
    DI, DS, K = hp["d_inner"], hp["d_state"], hp["d_conv"]
    for i in range(L):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", E, layer=i)
        if arch == "granitehybrid" and i in GRANITE["attn_layers"]:
            H, HKV, D = hp["n_head"], hp["n_head_kv"], hp["head_dim"]
            mat(p + "attn_q.weight", H * D, E, layer=i)
            mat(p + "attn_k.weight", HKV * D, E, layer=i)
            mat(p + "attn_v.weight", HKV * D, E, layer=i)
            mat(p + "attn_output.weight", E, H * D, layer=i)
        elif arch == "mamba":
            R = hp["dt_rank"]
            mat(p + "ssm_in.weight", 2 * DI, E, layer=i)
            tensors.append((p + "ssm_conv1d.weight", (rng.standard_normal((DI, K)) * 0.5).astype(np.float32), False, i))
            vec(p + "ssm_conv1d.bias", DI, mean=0.0, std=0.1, layer=i)
            mat(p + "ssm_x.weight", R + 2 * DS, DI, layer=i)
            mat(p + "ssm_dt.weight", DI, R, layer=i)
            vec(p + "ssm_dt.bias", DI, mean=-2.0, std=0.5, layer=i)
            a = -np.tile(np.arange(1, DS + 1, dtype=np.float32), (DI, 1)) * np.exp(rng.standard_normal((DI, DS)) * 0.1)
            tensors.append((p + "ssm_a", a.astype(np.float32), False, i))
            vec(p + "ssm_d", DI, mean=1.0, std=0.1, layer=i)
        else:
            NH, NG = hp["ssm_heads"], hp["n_group"]
            mat(p + "ssm_in.weight", 2 * DI + 2 * NG * DS + NH, E, layer=i)
            CD = DI + 2 * NG * DS
            tensors.append((p + "ssm_conv1d.weight", (rng.standard_normal((CD, K)) * 0.5).astype(np.float32), False, i))
            vec(p + "ssm_conv1d.bias", CD, mean=0.0, std=0.1, layer=i)
            vec(p + "ssm_dt.bias", NH, mean=-2.0, std=0.5, layer=i)
            a = -np.exp(rng.uniform(0.0, np.log(16.0), size=(NH, 1)))
            tensors.append((p + "ssm_a", a.astype(np.float32), False, i))
            tensors.append((p + "ssm_d", (1.0 + rng.standard_normal((NH, 1)) * 0.1).astype(np.float32), False, i))
            tensors.append((p + "ssm_norm.weight", (1.0 + rng.standard_normal((NG, DI // NG)) * 0.1).astype(np.float32),
                            False, i))
        if arch != "granitehybrid" or i not in GRANITE["attn_layers"]:
            mat(p + "ssm_out.weight", E, DI, layer=i)
        if arch == "granitehybrid":  # every layer's SwiGLU feed-forward
            vec(p + "ffn_norm.weight", E, layer=i)
            mat(p + "ffn_gate.weight", hp["n_ff"], E, layer=i)
            mat(p + "ffn_up.weight", hp["n_ff"], E, layer=i)
            mat(p + "ffn_down.weight", E, hp["n_ff"], layer=i)

WORDS = """the of and to in is was that for it with as his on be at by had are but from or
have an they which one you were her all she there would their we him been has when who
will more no if out so said what up its about into than them can only other new some
could time these two may then do first any my now such like our over man me even most
made after also did many before must through back years where much your way well down
should because each just those people how too little state good very make world still
own see men work long get here between both life being under never day same another
know while last might us great old year off come since against go came right used take
three states himself few house use during without again place american around however
home small found thought went say part once general high upon school every does got
united left number course war until always away something fact though water less public
put think almost hand enough far took head yet government system better set told nothing
night end why called didn eyes find going look asked later knew point next program city
business give group toward young days let room president side social given present
several order national possible rather second face per among form important often things
looking early white case john become large big need four within felt along children saw
best church ever least power development light thing seemed family interest want members
mind country area others done turned although open god service certain kind problem
began different door thus help sense means whole matter perhaps itself york times law
human line above name example action company hands local show whether five history gave
today either act feet across taken past quite anything having seen death experience body
word half really week free software license copyright program code source public terms
conditions distribute modify version foundation warranty""".split()


def synthetic_vocab(n_vocab, arch):
    """A SentencePiece-style vocabulary: <unk> <s> </s>, (for Gemma) the turn
    markers, 256 byte tokens, then pieces, best score first."""
    toks, scores, types = [], [], []

    def add(text, score, ttype):
        toks.append(text)
        scores.append(score)
        types.append(ttype)

    add("<unk>", 0.0, gguf.TokenType.UNKNOWN)
    add("<s>", 0.0, gguf.TokenType.CONTROL)
    add("</s>", 0.0, gguf.TokenType.CONTROL)
    if arch in GEMMA:
        add("<start_of_turn>", 0.0, gguf.TokenType.CONTROL)
        add("<end_of_turn>", 0.0, gguf.TokenType.CONTROL)
    if arch == "phi3":
        # llama.cpp's vocabulary loader looks it up in files named phi3
        add("<|endoftext|>", 0.0, gguf.TokenType.CONTROL)
    for b in range(256):
        add("<0x%02X>" % b, 0.0, gguf.TokenType.BYTE)
    pieces = ["\u2581"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += [chr(c) for c in range(ord("A"), ord("Z") + 1)] + list(".,;:!?'\"()-0123456789")
    pieces += ["\u2581" + w for w in WORDS]
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    pieces += ["\u2581" + a for a in letters] + [a + b for a in letters for b in letters]
    pieces += ["\u2581" + a + b for a in letters for b in letters]
    pieces += [a + b + c for a in letters for b in letters for c in letters]
    pieces += ["\u2581" + a + b + c for a in letters for b in letters for c in letters]  # room for 32k vocabularies
    seen = set(toks)
    rank = 0
    for p in pieces:
        if len(toks) >= n_vocab:
            break
        if p in seen:
            continue
        seen.add(p)
        # Longer pieces score higher, as in a trained SentencePiece model, so
        # that whole words win over their letters.
        add(p, -10.0 + len(p) - rank * 1e-4, gguf.TokenType.NORMAL)
        rank += 1
    if len(toks) < n_vocab:
        sys.exit(f"gen_model: vocabulary of {n_vocab} is larger than the synthetic pieces available")
    return toks, scores, types


# ---------------------------------------------------------------- quantizers
# The gguf package quantizes F16/Q8_0/Q4_0 but not the K-quants; these follow
# ggml's block layouts (checked by dequantizing with gguf.quants below).

def _f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def quantize_q4_k(x):
    """Q4_K: super-blocks of 256 = 8 sub-blocks of 32, x ~ d*sc*q - dmin*m,
    q in 0..15, 6-bit sc and m, d and dmin in f16. Block: d, dmin, scales[12], qs[128]."""
    rows = x.reshape(-1, 256).astype(np.float32)
    nb = rows.shape[0]
    sub = rows.reshape(nb, 8, 32)
    mn = np.minimum(sub.min(axis=2), 0.0)          # <= 0
    mx = sub.max(axis=2)
    scale = (mx - mn) / 15.0                        # per sub-block step
    mins = -mn                                      # >= 0
    d = _f16(scale.max(axis=1) / 63.0).astype(np.float32)
    dmin = _f16(mins.max(axis=1) / 63.0).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d[:, None] > 0, np.rint(scale / d[:, None]), 0).clip(0, 63).astype(np.uint8)
        m = np.where(dmin[:, None] > 0, np.rint(mins / dmin[:, None]), 0).clip(0, 63).astype(np.uint8)
        step = d[:, None] * sc
        off = dmin[:, None] * m
        q = np.where(step[:, :, None] > 0, np.rint((sub + off[:, :, None]) / step[:, :, None]), 0)
    q = q.clip(0, 15).astype(np.uint8)
    scales = np.zeros((nb, 12), dtype=np.uint8)
    scales[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    qs = (q[:, 0::2, :] | (q[:, 1::2, :] << 4)).reshape(nb, 128)
    out = np.concatenate([_f16(d).view(np.uint8).reshape(nb, 2), _f16(dmin).view(np.uint8).reshape(nb, 2),
                          scales, qs], axis=1)
    return out.reshape(*x.shape[:-1], -1) if x.ndim >= 2 else out.reshape(-1)


def quantize_q6_k(x):
    """Q6_K: 256 = 16 sub-blocks of 16, x ~ d*sc*(q-32), q in 0..63, int8 sc.
    Block: ql[128], qh[64], scales[16], d (f16)."""
    rows = x.reshape(-1, 256).astype(np.float32)
    nb = rows.shape[0]
    sub = rows.reshape(nb, 16, 16)
    amax = np.abs(sub).max(axis=2)
    step = amax / 31.0
    d = _f16(step.max(axis=1) / 127.0).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d[:, None] > 0, np.rint(step / d[:, None]), 0).clip(-128, 127).astype(np.int8)
        eff = d[:, None] * sc.astype(np.float32)
        q = np.where(eff[:, :, None] > 0, np.rint(sub / eff[:, :, None]), 0)
    q = (q.clip(-32, 31) + 32).astype(np.uint8).reshape(nb, 256)
    ql = np.zeros((nb, 128), dtype=np.uint8)
    qh = np.zeros((nb, 64), dtype=np.uint8)
    for h in range(2):  # two halves of 128 elements
        base = q[:, h * 128:(h + 1) * 128]
        q1, q2, q3, q4 = base[:, 0:32], base[:, 32:64], base[:, 64:96], base[:, 96:128]
        ql[:, h * 64:h * 64 + 32] = (q1 & 15) | ((q3 & 15) << 4)
        ql[:, h * 64 + 32:h * 64 + 64] = (q2 & 15) | ((q4 & 15) << 4)
        qh[:, h * 32:h * 32 + 32] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
    out = np.concatenate([ql, qh, sc.view(np.uint8), _f16(d).view(np.uint8).reshape(nb, 2)], axis=1)
    return out.reshape(*x.shape[:-1], -1) if x.ndim >= 2 else out.reshape(-1)


def encode(x, qtype):
    """numpy float32 array (rows, cols) -> (array to write, its ggml type)."""
    if qtype == QT.F32:
        return x.astype(np.float32), qtype
    if qtype == QT.F16:
        return x.astype(np.float16), qtype
    if qtype == QT.Q4_K:
        return quantize_q4_k(x), qtype
    if qtype == QT.Q6_K:
        return quantize_q6_k(x), qtype
    return gguf.quants.quantize(x.astype(np.float32), qtype), qtype


def use_more_bits(i, n):
    # llama.cpp's Q4_K_M recipe gives these layers' attn_v and ffn_down Q6_K.
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


BLOCK = {"Q8_0": 32, "Q5_0": 32, "Q4_0": 32, "Q4_K": 256, "Q4_K_M": 256, "TQ1_0": 256, "TQ2_0": 256}


def weight_type(name, layer, n_layer, wtype, arch=None, cols=None):
    """The ggml type of a 2-D weight under the requested scheme. A matrix
    whose rows are not whole blocks of the type (Mamba's dt projection, rows
    of dt_rank) is written F16, as llama-quantize's fallback ends for it."""
    if arch == "bitnet" and wtype in ("TQ1_0", "TQ2_0") and name == "token_embd.weight":
        return QT.F16  # BitNet's embedding is not ternary (and is the output: tied)
    if cols is not None and cols % BLOCK.get(wtype, 1):
        return QT.F16
    if wtype == "Q4_K_M":
        if name == "output.weight":
            return QT.Q6_K
        if name.endswith(("attn_v.weight", "ffn_down.weight")) and use_more_bits(layer, n_layer):
            return QT.Q6_K
        return QT.Q4_K
    return QT[wtype]


def build(arch, shape, wtype, seed, n_vocab=None, tied=None, swa=0, experts=0):
    hp = dict(SHAPES[shape])
    if shape == "tiny":
        hp.update(TINY_OVERRIDES.get(arch, {}))
    if n_vocab:
        hp["n_vocab"] = n_vocab
    if experts:  # llama with experts: Mixtral
        hp.update(n_expert=experts, n_expert_used=2, n_ff_exp=hp["n_ff"])  # experts of n_ff, as llama.cpp reads them
    if arch in SSM:
        if shape == "micro":  # the fuzz seeds: a few KB of state-space layers
            hp.update(d_state=8 if arch == "mamba" else 16)
        for k, v in SSM_DEFAULTS[arch].items():
            hp.setdefault(k, v)
        hp.setdefault("d_inner", 2 * hp["n_embd"])
        hp.setdefault("dt_rank", -(-hp["n_embd"] // 16))
        hp.setdefault("ssm_heads", max(1, hp["d_inner"] // 64) if shape != "micro" else 4)
    if arch in ("qwen3moe", "olmoe") and "n_expert" not in hp:
        hp.update(n_expert=4, n_expert_used=2, n_ff_exp=hp["n_ff"])
    E, L, H, HKV, D, F, V = (hp[k] for k in ("n_embd", "n_layer", "n_head", "n_head_kv", "head_dim", "n_ff", "n_vocab"))
    rng = np.random.default_rng(seed)
    if tied is None:
        # as the real Gemma models (Gemma 2's output is always the embedding); llama.cpp's
        # bitnet loader reads no output.weight (a file with one has a tensor too many for it);
        # Mamba-2 tied (as mamba2-130m), Mamba not, so that both ways are exercised
        tied = arch in GEMMA or arch in ("bitnet", "mamba2")

    tensors = []  # (name, float32 array in numpy (rows, cols) order, is_matrix, layer)

    def mat(name, rows, cols, layer=-1, std=None):
        s = std if std is not None else 1.0 / np.sqrt(cols)
        tensors.append((name, (rng.standard_normal((rows, cols)) * s).astype(np.float32), True, layer))

    def exps(name, n_expert, rows, cols, layer=-1):
        """The experts' matrices: numpy (n_expert, rows, cols), ggml [cols, rows, n_expert]."""
        x = rng.standard_normal((n_expert, rows, cols)) / np.sqrt(cols)
        tensors.append((name, x.astype(np.float32), True, layer))

    def ternary(name, rows, cols, layer, separate):
        """BitNet b1.58's weights: round(w / s) clipped to {-1, 0, 1}, s = mean |w|
        (convert_hf_to_gguf's weight_quant), times s or with s beside them."""
        w = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        s = np.float32(max(np.abs(w).mean(), 1e-5))
        t = np.clip(np.round(w / s), -1, 1).astype(np.float32)
        if separate:
            tensors.append((name, t, True, layer))
            tensors.append((name[:-len(".weight")] + ".scale", np.array([s], dtype=np.float32), False, layer))
        else:
            tensors.append((name, (t * s).astype(np.float32), True, layer))

    def vec(name, n, mean=1.0, std=0.1, layer=-1):
        tensors.append((name, (mean + rng.standard_normal(n) * std).astype(np.float32), False, layer))

    # Embeddings: Gemma scales them by sqrt(n_embd) itself, the others use them as they are.
    # BitNet's tied output reads the embedding back: small, so that the layers decide the next token.
    emb_std = 1.0 / np.sqrt(E) if arch in GEMMA else 0.15 if arch == "bitnet" else 1.0
    if arch in SSM and tied:  # the embedding is the output too: logits of a few units, as an untied output's
        emb_std = 3.0 / np.sqrt(E)
    if arch == "granitehybrid":
        emb_std = 1.0 / GRANITE["embedding_scale"]
    n_ctx = hp.get("n_ctx", 4096)
    n_rot = hp.get("n_rot", D)
    mat("token_embd.weight", V, E, std=emb_std)
    if arch == "gpt2":
        mat("position_embd.weight", n_ctx, E, std=0.5)
    if arch == "phi3":
        # LongRoPE's per-dimension factors (>= 1, growing with the wavelength, as Phi-3's)
        tensors.append(("rope_factors_long.weight", np.linspace(1.0, 12.0, n_rot // 2).astype(np.float32), False, -1))
        tensors.append(("rope_factors_short.weight", np.linspace(1.0, 1.5, n_rot // 2).astype(np.float32), False, -1))
    if arch == "gpt2":
        for i in range(L):
            p = f"blk.{i}."
            vec(p + "attn_norm.weight", E, layer=i)
            vec(p + "attn_norm.bias", E, mean=0.0, std=0.1, layer=i)
            mat(p + "attn_qkv.weight", (H + 2 * HKV) * D, E, layer=i)
            vec(p + "attn_qkv.bias", (H + 2 * HKV) * D, mean=0.0, std=0.3, layer=i)
            mat(p + "attn_output.weight", E, H * D, layer=i)
            vec(p + "attn_output.bias", E, mean=0.0, std=0.1, layer=i)
            vec(p + "ffn_norm.weight", E, layer=i)
            vec(p + "ffn_norm.bias", E, mean=0.0, std=0.1, layer=i)
            mat(p + "ffn_up.weight", F, E, layer=i)
            vec(p + "ffn_up.bias", F, mean=0.0, std=0.3, layer=i)
            mat(p + "ffn_down.weight", E, F, layer=i)
            vec(p + "ffn_down.bias", E, mean=0.0, std=0.1, layer=i)
    if arch == "bitnet":
        for i in range(L):
            p = f"blk.{i}."
            sep = i % 2 == 1
            vec(p + "attn_norm.weight", E, layer=i)
            ternary(p + "attn_q.weight", H * D, E, i, sep)
            ternary(p + "attn_k.weight", HKV * D, E, i, sep)
            ternary(p + "attn_v.weight", HKV * D, E, i, sep)
            # larger than 1, so that the layers, not the embedding the tied output reads back, decide
            vec(p + "attn_sub_norm.weight", H * D, mean=3.0, std=0.3, layer=i)
            ternary(p + "attn_output.weight", E, H * D, i, sep)
            vec(p + "ffn_norm.weight", E, layer=i)
            ternary(p + "ffn_gate.weight", F, E, i, sep)
            ternary(p + "ffn_up.weight", F, E, i, sep)
            vec(p + "ffn_sub_norm.weight", F, mean=3.0, std=0.3, layer=i)
            ternary(p + "ffn_down.weight", E, F, i, sep)
    if arch in SSM:
        ssm_tensors(arch, hp, rng, mat, vec, tensors)
    for i in range(L if arch not in ("gpt2", "bitnet") + SSM else 0):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", E, layer=i)
        if arch == "phi3":
            mat(p + "attn_qkv.weight", (H + 2 * HKV) * D, E, layer=i)
        else:
            mat(p + "attn_q.weight", H * D, E, layer=i)
            mat(p + "attn_k.weight", HKV * D, E, layer=i)
            mat(p + "attn_v.weight", HKV * D, E, layer=i)
        if arch == "qwen2":
            vec(p + "attn_q.bias", H * D, mean=0.0, std=0.5, layer=i)
            vec(p + "attn_k.bias", HKV * D, mean=0.0, std=0.5, layer=i)
            vec(p + "attn_v.bias", HKV * D, mean=0.0, std=0.5, layer=i)
        if arch in ("qwen3", "qwen3moe", "gemma3"):
            vec(p + "attn_q_norm.weight", D, layer=i)
            vec(p + "attn_k_norm.weight", D, layer=i)
        if arch == "olmoe":  # over all heads at once
            vec(p + "attn_q_norm.weight", H * D, layer=i)
            vec(p + "attn_k_norm.weight", HKV * D, layer=i)
        mat(p + "attn_output.weight", E, H * D, layer=i)
        if arch in GEMMA:
            # Larger than 1 so that the layers, not the input embedding that
            # the tied output would read back, decide the next token.
            vec(p + "post_attention_norm.weight", E, mean=3.0, std=0.3, layer=i)
        vec(p + "ffn_norm.weight", E, layer=i)
        if "n_expert" in hp:
            X, FX = hp["n_expert"], hp["n_ff_exp"]
            # the router stays F32 (llama-quantize leaves ffn_gate_inp so); logits of a few units
            tensors.append((p + "ffn_gate_inp.weight",
                            (rng.standard_normal((X, E)) * 2.0 / np.sqrt(E)).astype(np.float32), False, i))
            exps(p + "ffn_gate_exps.weight", X, FX, E, layer=i)
            exps(p + "ffn_up_exps.weight", X, FX, E, layer=i)
            exps(p + "ffn_down_exps.weight", X, E, FX, layer=i)
        elif arch == "phi3":
            mat(p + "ffn_up.weight", 2 * F, E, layer=i)  # gate rows, then up rows
        else:
            mat(p + "ffn_gate.weight", F, E, layer=i)
            mat(p + "ffn_up.weight", F, E, layer=i)
        if "n_expert" not in hp:
            mat(p + "ffn_down.weight", E, F, layer=i)
        if arch in GEMMA:
            vec(p + "post_ffw_norm.weight", E, mean=3.0, std=0.3, layer=i)
    # Gemma 2's logits pass its final soft-cap: a larger norm weight spreads
    # them over more units (max ~10) under the cap of 30, so that the cap
    # bends them and argmax decisions stay clear.
    vec("output_norm.weight", E, mean=2.0 if arch == "gemma2" else 1.0)
    if arch == "gpt2":
        vec("output_norm.bias", E, mean=0.0, std=0.1)
    if not tied:
        mat("output.weight", V, E, std=3.0 / np.sqrt(E) * (GRANITE["logit_scale"] if arch == "granitehybrid" else 1.0))

    w = gguf.GGUFWriter(path=None, arch=arch)
    w.add_name(f"random {arch} {shape} {wtype}")
    if arch in SSM:
        # the keys convert_hf_to_gguf.py writes for Mamba / Mamba-2 (head count and
        # feed-forward 0: "unused, but seemingly required when loading")
        w.add_context_length(2 ** 20)
        w.add_embedding_length(E)
        if arch != "granitehybrid":
            w.add_feed_forward_length(0)
            w.add_head_count(0)
        w.add_block_count(L)
        w.add_ssm_conv_kernel(hp["d_conv"])
        w.add_ssm_inner_size(hp["d_inner"])
        w.add_ssm_state_size(hp["d_state"])
        w.add_layer_norm_rms_eps(1e-5)
        if arch == "mamba":
            w.add_ssm_time_step_rank(hp["dt_rank"])
            w.add_ssm_dt_b_c_rms(False)
        else:
            w.add_ssm_time_step_rank(hp["ssm_heads"])
            w.add_ssm_group_count(hp["n_group"])
        if arch == "granitehybrid":
            # GraniteHybridModel.set_gguf_parameters (conversion/granite.py): llama's keys, a KV head
            # count per layer (0: a Mamba-2 layer), Granite's multipliers, no RoPE
            w.add_feed_forward_length(F)
            w.add_head_count(H)
            w.add_head_count_kv([HKV if i in GRANITE["attn_layers"] else 0 for i in range(L)])
            w.add_rope_freq_base(10000.0)
            w.add_rope_dimension_count(D)
            w.add_attention_scale(GRANITE["attention_scale"])
            w.add_embedding_scale(GRANITE["embedding_scale"])
            w.add_residual_scale(GRANITE["residual_scale"])
            w.add_logit_scale(GRANITE["logit_scale"])
            w.add_rope_scaling_finetuned(False)
    else:
        w.add_context_length(n_ctx)
        w.add_embedding_length(E)
        w.add_block_count(L)
        w.add_feed_forward_length(F)
        w.add_head_count(H)
        w.add_head_count_kv(HKV)
    if arch in SSM:
        pass
    elif D * H != E or arch in ("qwen3", "qwen3moe", "gemma3", "gemma2"):
        w.add_key_length(D)
        w.add_value_length(D)
    if arch == "gpt2":
        w.add_layer_norm_eps(1e-5)
    elif arch in SSM:
        pass
    else:
        w.add_layer_norm_rms_eps(1e-6 if arch in ("gemma2", "gemma3", "qwen2", "qwen3", "qwen3moe") else 1e-5)
    if arch == "llama":
        w.add_rope_freq_base(10000.0)
        w.add_rope_dimension_count(D)
        if swa:
            # Mistral 7B v0.1's key; llama.cpp does not apply it to llama files
            w.add_sliding_window(swa)
    elif arch in ("qwen2", "qwen3", "qwen3moe"):
        w.add_rope_freq_base(1000000.0)
    elif arch == "olmoe":
        w.add_rope_freq_base(10000.0)
    elif arch == "phi3":
        w.add_rope_freq_base(10000.0)
        w.add_rope_dimension_count(n_rot)
        # LongRoPE as Phi-3-128k's converter writes it: the original context
        # (short factors within it, long beyond: the parity tests' 256-token
        # context is beyond), and the attention factor sqrt(1 + ln(s)/ln(orig)).
        orig = min(128, n_ctx // 2)
        w.add_rope_scaling_orig_ctx_len(orig)
        w.add_rope_scaling_attn_factors(float(np.sqrt(1 + np.log(n_ctx / orig) / np.log(orig))))
        # Phi-3-mini's files carry a window; llama.cpp disables it (so a
        # 72-token prompt over a window of 16 shows whether it is applied).
        w.add_sliding_window(16)
    elif arch == "gemma2":
        w.add_rope_freq_base(10000.0)
        w.add_sliding_window(hp.get("sliding_window", 4096))
        # The attention cap smaller than the real 50, so that random weights'
        # scores reach it; the final cap the real 30 (logits reach ~13).
        w.add_attn_logit_softcapping(5.0)
        w.add_final_logit_softcapping(30.0)
    elif arch == "bitnet":
        # bitnet-b1.58-2B-4T's base; convert_hf_to_gguf's BitnetModel writes linear scaling of 1
        w.add_rope_freq_base(500000.0)
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(1.0)
    elif arch == "gemma3":
        w.add_rope_freq_base(1000000.0)
        w.add_sliding_window(hp.get("sliding_window", 512))
    toks, scores, types = synthetic_vocab(V, arch)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if arch in GEMMA:
        w.add_eot_token_id(4)
        w.add_add_space_prefix(False)
    if "n_expert" in hp:
        w.add_expert_count(hp["n_expert"])
        w.add_expert_used_count(hp["n_expert_used"])
        if arch not in ("llama", "olmoe"):  # llama.cpp's llama and olmoe loaders give each expert n_ff
            w.add_expert_feed_forward_length(hp["n_ff_exp"])
    w.add_file_type({"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7, "Q5_0": 8, "Q4_K": 15, "Q4_K_M": 15,
                     "TQ1_0": 36, "TQ2_0": 37}[wtype])

    for name, x, is_matrix, layer in tensors:
        if is_matrix:
            data, qt = encode(x, weight_type(name, layer, L, wtype, arch, x.shape[-1]))
        else:
            data, qt = x, QT.F32
        if qt in (QT.F32, QT.F16):
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qt)
    return w


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=ARCHES, required=True)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--type", dest="wtype", default="F32",
                    choices=("F32", "F16", "Q8_0", "Q5_0", "Q4_0", "Q4_K", "Q4_K_M", "TQ1_0", "TQ2_0"),
                    help="weight type of the 2-D tensors (norms and biases stay F32)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vocab", type=int, default=0, help="vocabulary size (default: the shape's)")
    ap.add_argument("--tied", choices=("auto", "yes", "no"), default="auto",
                    help="no output.weight: the output reuses token_embd (auto: as the family's small models)")
    ap.add_argument("--swa", type=int, default=0,
                    help="llama: write llama.attention.sliding_window (Mistral 7B v0.1's key)")
    ap.add_argument("--experts", type=int, default=0,
                    help="llama: a mixture of this many experts, top 2 (Mixtral's layout)")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()
    tied = None if a.tied == "auto" else a.tied == "yes"
    if a.swa and a.arch != "llama":
        sys.exit("gen_model: --swa is for --arch llama")
    if a.experts and a.arch != "llama":
        sys.exit("gen_model: --experts is for --arch llama (qwen3moe always has experts)")
    w = build(a.arch, a.shape, a.wtype, a.seed, a.vocab or None, tied, a.swa, a.experts)
    w.write_header_to_file(a.output)
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(a.output, "rb") as f:
        print(hashlib.sha256(f.read()).hexdigest())


if __name__ == "__main__":
    main()
