"""`trinity template` against jinja2 (transformers' environment, as in
test_template_jinja2.py): a template file alone, with the model's BOS/EOS,
--date for strftime_now, tools from a file or from a request body, the
fallback for a model without a template, and its errors."""
import datetime
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_template_jinja2 as T  # noqa: E402

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "What's up?"}]


def run(trinity_bin, *args):
    p = subprocess.run([trinity_bin, "template", *args], capture_output=True, timeout=120)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def jinja2_render(path, messages, tools=None, agp=True, bos="", eos="", now=None):
    env = T.reference_env()
    if now is not None:
        env.globals["strftime_now"] = lambda fmt: now.strftime(fmt)
    src = open(path, encoding="utf-8").read()
    return env.from_string(src).render(messages=messages, tools=tools, documents=None, add_generation_prompt=agp,
                                       bos_token=bos, eos_token=eos)


@pytest.fixture(scope="module")
def templates():
    return T.template_dir()


@pytest.fixture
def msgs_file(tmp_path):
    p = tmp_path / "msgs.json"
    p.write_text(json.dumps(MSGS))
    return str(p)


@pytest.mark.parametrize("name", ["Qwen-Qwen2.5-7B-Instruct.jinja", "meta-llama-Llama-3.3-70B-Instruct.jinja",
                                  "mistralai-Mistral-Nemo-Instruct-2407.jinja", "ibm-granite-granite-4.0.jinja"])
@pytest.mark.parametrize("agp", [True, False])
def test_file_alone_matches_jinja2(trinity_bin, templates, msgs_file, name, agp):
    path = os.path.join(templates, name)
    args = ["--chat-template", path, "--messages", msgs_file, "--bos-token", "<s>", "--eos-token", "</s>"]
    if not agp:
        args.append("--no-generation-prompt")
    rc, out, err = run(trinity_bin, *args)
    assert rc == 0, err
    assert out == jinja2_render(path, MSGS, agp=agp, bos="<s>", eos="</s>")


def test_date_fixes_strftime_now(trinity_bin, templates, msgs_file):
    path = os.path.join(templates, "meta-llama-Llama-3.2-3B-Instruct.jinja")
    assert "strftime_now" in open(path).read()
    rc, out, err = run(trinity_bin, "--chat-template", path, "--messages", msgs_file, "--date", "2031-07-09")
    assert rc == 0, err
    want = jinja2_render(path, MSGS, now=datetime.datetime(2031, 7, 9))
    assert "09 Jul 2031" in want and out == want


def test_tools_from_file_and_from_request_body(trinity_bin, templates, tmp_path):
    path = os.path.join(templates, "Qwen-Qwen3-0.6B.jinja")
    msgs = T.tool_turns(False)
    (tmp_path / "m.json").write_text(json.dumps(msgs))
    (tmp_path / "t.json").write_text(json.dumps(T.TOOLS))
    (tmp_path / "body.json").write_text(json.dumps({"model": "x", "messages": msgs, "tools": T.TOOLS}))
    want = jinja2_render(path, msgs, tools=T.TOOLS)
    assert "<tools>" in want and "<tool_response>" in want
    rc, out, err = run(trinity_bin, "--chat-template", path, "--messages", str(tmp_path / "m.json"),
                       "--tools", str(tmp_path / "t.json"))
    assert rc == 0, err
    assert out == want
    rc, out, err = run(trinity_bin, "--chat-template", path, "--messages", str(tmp_path / "body.json"))
    assert rc == 0, err
    assert out == want


def test_model_bos_eos_and_the_bos_the_tokenizer_adds(trinity_bin, model_path, templates, msgs_file):
    """With -m: bos_token/eos_token are the vocabulary's texts; the leading BOS
    text goes (the tokenizer adds BOS itself), as llama-server does."""
    path = os.path.join(templates, "mistralai-Mistral-Nemo-Instruct-2407.jinja")
    rc, out, err = run(trinity_bin, "-m", model_path, "--chat-template", path, "--messages", msgs_file)
    assert rc == 0, err
    want = jinja2_render(path, MSGS, bos="<bos>", eos="<eos>")
    assert want.startswith("<bos>")
    assert out == want[len("<bos>"):]


def test_model_without_template_warns_and_falls_back(trinity_bin, model_path, msgs_file):
    """Gemma 3 270M is the base model: no tokenizer.chat_template. The built-in
    Gemma format is the shape of Gemma 3's template (test_chat_format.py)."""
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "engine"))
    import test_chat_format as C
    rc, out, err = run(trinity_bin, "-m", model_path, "--messages", msgs_file)
    assert rc == 0, err
    assert "no tokenizer.chat_template" in err and "replies may not end" in err
    want = T.reference_env().from_string(C.TEMPLATES["gemma"]).render(messages=MSGS, add_generation_prompt=True,
                                                                      bos_token="")
    assert out == want


def test_errors_name_the_problem(trinity_bin, templates, msgs_file, tmp_path):
    rc, _, err = run(trinity_bin, "--chat-template", str(tmp_path / "missing.jinja"), "--messages", msgs_file)
    assert rc == 1 and "no such file and not a built-in format" in err
    bad = tmp_path / "bad.jinja"
    bad.write_text("line one\n{% for m in messages %}\n{{ m.content }\n{% endfor %}\n")
    rc, _, err = run(trinity_bin, "--chat-template", str(bad), "--messages", msgs_file)
    assert rc == 1 and "template line 3" in err, err
    alt = os.path.join(templates, "google-gemma-2-2b-it.jinja")
    rc, _, err = run(trinity_bin, "--chat-template", alt, "--messages", msgs_file)
    assert rc == 1 and "System role not supported" in err, err
    loop = tmp_path / "loop.jinja"
    loop.write_text("{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}")
    rc, _, err = run(trinity_bin, "--chat-template", str(loop), "--messages", msgs_file)
    assert rc == 1 and ("steps" in err or "output grew" in err or "out of memory" in err), err
    rc, _, err = run(trinity_bin, "--chat-template", "chatml", "--messages", msgs_file, "--date", "2025-13-01")
    assert rc == 2 and "--date" in err
    (tmp_path / "notjson.json").write_text("[{")
    rc, _, err = run(trinity_bin, "--chat-template", "chatml", "--messages", str(tmp_path / "notjson.json"))
    assert rc == 1 and "not valid JSON" in err


def test_the_files_own_template_and_its_tool_use_variant(trinity_bin, templates, tmp_path):
    """A model file with tokenizer.chat_template (Qwen 2.5's) and
    tokenizer.chat_template.tool_use (Hermes 2 Pro's tool template): without
    tools the first renders, with tools the second (as llama.cpp picks)."""
    import gguf
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests"))
    from test_model_bad_input import copy_model
    base = str(tmp_path / "base.gguf")
    subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts", "gen_model.py"),
                    "--arch", "llama", "-o", base], check=True, capture_output=True)
    main_t = os.path.join(templates, "Qwen-Qwen2.5-7B-Instruct.jinja")
    tool_t = os.path.join(templates, "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja")
    S = gguf.GGUFValueType.STRING
    model = copy_model(base, str(tmp_path / "m.gguf"), set_keys={
        "tokenizer.chat_template": (open(main_t).read(), S),
        "tokenizer.chat_template.tool_use": (open(tool_t).read(), S)})
    msgs = [{"role": "user", "content": "Weather in Paris?"}]
    (tmp_path / "m.json").write_text(json.dumps(msgs))
    (tmp_path / "t.json").write_text(json.dumps(T.TOOLS))
    tok = ["--bos-token", "", "--eos-token", ""]
    rc, out, err = run(trinity_bin, "-m", model, "--messages", str(tmp_path / "m.json"), *tok)
    assert rc == 0, err
    assert out == jinja2_render(main_t, msgs)
    rc, out, err = run(trinity_bin, "-m", model, "--messages", str(tmp_path / "m.json"), "--tools",
                       str(tmp_path / "t.json"), *tok)
    assert rc == 0, err
    want = jinja2_render(tool_t, msgs, tools=T.TOOLS)
    assert "<tools>" in want and out == want
