"""tr_chat_format against the Jinja chat templates the model families ship
(rendered with jinja2, as Hugging Face's apply_chat_template does), with
bos_token empty: Trinity leaves BOS to the tokenizer. The detection of the
format from tokenizer.chat_template is checked by writing each template into
a model file."""
import ctypes
import os
import subprocess
import sys

import jinja2
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import engine_ctypes as E  # noqa: E402

# The shape of each family's template (Gemma 3 without its image branches).
TEMPLATES = {
    "gemma": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
        "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
        "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
        "{% for message in loop_messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
        "{% else %}{% set role = message['role'] %}{% endif %}"
        "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim"
        " + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
    ),
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "llama3": (
        "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}"
        "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
}

CONVERSATIONS = [
    [("user", "Hello!")],
    [("system", "You are terse."), ("user", "Hi"), ("assistant", "Hello."), ("user", "What is 2+2? ")],
    [("user", "  spaced  "), ("assistant", "ok"), ("user", "line\nbreak")],
]


class Msg(ctypes.Structure):
    _fields_ = [("role", ctypes.c_char_p), ("content", ctypes.c_char_p)]


@pytest.fixture(scope="module")
def lib():
    lib = E.load_lib(os.environ.get("TRINITY_LIB"))
    lib.tr_chat_format.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(Msg), ctypes.c_size_t,
                                   ctypes.c_bool, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(E.Error)]
    lib.free.argtypes = [ctypes.c_void_p]
    return lib


def fmt(lib, model_ptr, name, conv, add_assistant=True):
    arr = (Msg * len(conv))(*[Msg(r.encode(), c.encode()) for r, c in conv])
    out = ctypes.c_void_p()
    err = E.Error()
    st = lib.tr_chat_format(model_ptr, name.encode() if name else None, arr, len(conv), add_assistant,
                            ctypes.byref(out), ctypes.byref(err))
    if st != 0:
        raise E.EngineError(err.msg.decode())
    s = ctypes.string_at(out.value).decode()
    lib.free(out)
    return s


def render(name, conv, add_assistant=True):
    t = jinja2.Environment().from_string(TEMPLATES[name])
    return t.render(messages=[{"role": r, "content": c} for r, c in conv], bos_token="",
                    add_generation_prompt=add_assistant)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
def test_format_matches_the_jinja_template(lib, name, conv):
    c = CONVERSATIONS[conv]
    assert fmt(lib, None, name, c) == render(name, c)
    assert fmt(lib, None, name, c, add_assistant=False) == render(name, c, add_assistant=False)


def test_unknown_format_is_an_error(lib):
    with pytest.raises(E.EngineError, match="chat format 'vicuna' is unknown"):
        fmt(lib, None, "vicuna", CONVERSATIONS[0])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("chat") / "m.gguf")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", "llama", "-o", path],
                   check=True, capture_output=True)
    return path


def with_template(base, dst, template):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from test_model_bad_input import copy_model
    import gguf
    return copy_model(base, dst, set_keys={"tokenizer.chat_template": (template, gguf.GGUFValueType.STRING)})


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_template_in_the_file_is_recognised(lib, base, tmp_path, name):
    m = E.Model(lib, with_template(base, str(tmp_path / "m.gguf"), TEMPLATES[name]))
    try:
        c = CONVERSATIONS[1]
        assert fmt(lib, m.ptr, None, c) == render(name, c)
    finally:
        m.close()


def test_unknown_template_in_the_file_is_an_error(lib, base, tmp_path):
    m = E.Model(lib, with_template(base, str(tmp_path / "m.gguf"), "{{ messages }}"))
    try:
        with pytest.raises(E.EngineError, match="not a known format; pass --chat-template"):
            fmt(lib, m.ptr, None, CONVERSATIONS[0])
    finally:
        m.close()
