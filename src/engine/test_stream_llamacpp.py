"""Attention sinks against llama.cpp: the same slides done with llama.cpp's own
KV-cache operations (llama-cpp-python: llama_memory_seq_rm drops the block
after the sinks, llama_memory_seq_add moves the later positions down, and
llama.cpp re-rotates the moved keys with its own RoPE shift, per layer) must
give the greedy text `trinity run --kv-sinks N --kv-window W --temp 0` gives,
or part from it only as the parity tests allow (at a near-tie of llama.cpp's
own logits, R.NEAR_TIE_REAL). The generation runs through
several slides (more tokens than the window holds), for sinks 4 and 0 and
for sinks not a multiple of the block."""
import os
import sys

import numpy as np
import pytest

from conftest import run_trinity

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import llamacpp_ref as R  # noqa: E402

BLOCK = 32
N_GEN = 160


def llama_stream_greedy(llama_cpp, llm, prompt, sinks, window, n):
    """llama.cpp's greedy tokens and their rows' top logits, sliding as Trinity does:
    when the cache holds cap positions and a token is to be fed, positions
    [sinks, sinks + 32) go and the later ones move down by 32."""
    cap = (sinks + window + BLOCK - 1) // BLOCK * BLOCK + BLOCK
    mem = llama_cpp.llama_get_memory(llm._ctx.ctx)
    llm.reset()
    assert len(prompt) <= cap
    llm.eval(list(prompt))
    out, rows = [], []
    while len(out) < n:
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        t = int(np.argmax(row))
        out.append(t)
        rows.append(row)
        if R.is_eog(llm, t) or len(out) == n:
            break
        if llm.n_tokens == cap:  # slide
            assert llama_cpp.llama_memory_seq_rm(mem, 0, sinks, sinks + BLOCK)
            llama_cpp.llama_memory_seq_add(mem, 0, sinks + BLOCK, -1, -BLOCK)
            ids = list(llm.input_ids[:llm.n_tokens])
            ids = ids[:sinks] + ids[sinks + BLOCK:]
            llm.n_tokens -= BLOCK
            llm.input_ids[:llm.n_tokens] = ids
        llm.eval([t])
    return out, rows


@pytest.fixture(scope="module")
def llm(model_path, llama_cpp):
    m = R.load(model_path, 256)
    yield m
    m.close()


@pytest.mark.parametrize("sinks, window", [(4, 32), (0, 32), (5, 20)])
def test_streaming_greedy_text_is_llamacpp_s(trinity_bin, model_path, llama_cpp, llm, sinks, window):
    text = R.CAPITAL  # the parity tests' prompt: no near-tie in llama.cpp's first greedy tokens
    prompt = llm.tokenize(text.encode(), add_bos=True, special=True)
    want, rows = llama_stream_greedy(llama_cpp, llm, prompt, sinks, window, N_GEN)
    cap = (sinks + window + BLOCK - 1) // BLOCK * BLOCK + BLOCK
    assert len(prompt) + len(want) > cap + 2 * BLOCK, "the generation must go through several slides"
    p = run_trinity("run", "-m", model_path, "-p", text, "-n", N_GEN, "--temp", 0, "-t", 2, "--kv-sinks", sinks,
                    "--kv-window", window, check=True)
    got = p.stdout.encode()
    detok = lambda toks: llm.detokenize(toks, prev_tokens=prompt)  # noqa: E731
    n_same = 0
    for k in range(len(want)):
        if got.startswith(detok(want[:k + 1])) and not R.is_eog(llm, want[k]):
            n_same = k + 1
            continue
        break
    if n_same == len(want) or (n_same < len(want) and R.is_eog(llm, want[n_same]) and got == detok(want[:n_same])):
        return  # the same text
    # They part at step n_same: allowed only at a near-tie of llama.cpp's row.
    row = rows[n_same]
    done = detok(want[:n_same])
    rest = got[len(done):]
    order = np.argsort(-row)[:64]
    gap = 1.0
    for i in order:
        i = int(i)
        if i == want[n_same]:
            continue
        piece = detok(want[:n_same] + [i])[len(done):]
        if piece and rest.startswith(piece):
            gap = float((row[order[0]] - row[i]) / abs(row[order[0]]))
            break
    assert gap < R.NEAR_TIE_REAL, \
        f"trinity parts from llama.cpp after {n_same} tokens (gap {gap:.4f}): " \
        f"{got[len(done):len(done) + 80]!r} vs {detok(want)[len(done):len(done) + 80]!r}"
