"""Trinity's Jinja interpreter against jinja2, byte for byte, on the real chat
templates llama.cpp ships (vendor/llama.cpp/models/templates/*.jinja of the
pinned llama-cpp-python source distribution, fetched with
bench/llama_server.py's source_tree when missing).

The reference is the environment Hugging Face transformers renders chat
templates in (transformers' _compile_jinja_template): jinja2's
ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks, the
loopcontrols extension and the `generation` tag, a tojson filter that is
json.dumps (ensure_ascii False, with its indent/separators/sort_keys), and
the globals raise_exception and strftime_now; render() gets messages, tools
(None when not given), documents=None, add_generation_prompt and the special
tokens.

Each template is rendered with several conversations (system/user/assistant
turns, assistant tool calls with string and with object arguments, tool
results, tools given) with add_generation_prompt on and off. Where jinja2
renders, Trinity must give the same bytes; where jinja2 raises (a
raise_exception such as "roles must alternate", an undefined value, a filter
jinja2 does not have) Trinity must fail too, with raise_exception's message.
A case Trinity refuses with "not supported" is counted apart (a clear error,
never a wrong prompt). Report: $TRINITY_TEST_REPORT_DIR/template_parity.md."""
import ctypes
import datetime
import glob
import json
import os
import sys

import jinja2
import pytest
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import llama_server  # noqa: E402

NOW = datetime.datetime(2026, 3, 15, 12, 30, 0, tzinfo=datetime.timezone.utc)


class Generation(Extension):
    """{% generation %}...{% endgeneration %}: renders its body (transformers
    uses it to mark assistant text)."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def reference_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: NOW.strftime(fmt)
    return env


TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "The city, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "search", "description": "Search the web.",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string"}, "max_results": {"type": "integer", "default": 5}},
            "required": ["query"]}}},
]


def tool_turns(args_as_object):
    args = {"city": "Paris", "unit": "celsius"}
    call = {"id": "call_0001", "type": "function",
            "function": {"name": "get_weather", "arguments": args if args_as_object else json.dumps(args)}}
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None if args_as_object else "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0001", "name": "get_weather",
         "content": "{\"temperature\": 21, \"condition\": \"sunny\"}"},
        {"role": "assistant", "content": "It is 21 °C and sunny in Paris."},
        {"role": "user", "content": "Thanks!"},
    ]


CASES = {
    "system_user": ({"messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello, who are you?"}]}),
    "multi_turn": ({"messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"}]}),
    "no_system": ({"messages": [
        {"role": "user", "content": "  Héllo — 你好 😀\n\n"},
        {"role": "assistant", "content": "Hi! <b>\"quoted\"</b> 'single' \\ back"},
        {"role": "user", "content": "Tell me a joke."}]}),
    "not_alternating": ({"messages": [
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"}]}),
    "tools_given": ({"messages": [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS}),
    "tool_calls_string_args": ({"messages": tool_turns(False), "tools": TOOLS}),
    "tool_calls_object_args": ({"messages": tool_turns(True), "tools": TOOLS}),
}


def template_dir():
    return os.path.join(llama_server.source_tree(), "models", "templates")


def template_files():
    return sorted(glob.glob(os.path.join(template_dir(), "*.jinja")))


class Trinity:
    def __init__(self, lib):
        class Err(ctypes.Structure):
            _fields_ = [("msg", ctypes.c_char * 512)]

        class Opts(ctypes.Structure):
            _fields_ = [("max_output", ctypes.c_size_t), ("max_steps", ctypes.c_uint64),
                        ("max_memory", ctypes.c_size_t), ("now", ctypes.c_int64)]

        self.Err, self.Opts = Err, Opts
        self.lib = lib
        lib.tr_template_parse.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p),
                                          ctypes.POINTER(Err)]
        lib.tr_template_render.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(Opts),
                                           ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(Err)]
        lib.tr_template_free.argtypes = [ctypes.c_void_p]
        self.libc = ctypes.CDLL(None)
        self.libc.free.argtypes = [ctypes.c_void_p]

    def render(self, src, variables):
        """(text, None) or (None, error message)."""
        b = src.encode()
        t = ctypes.c_void_p()
        err = self.Err()
        if self.lib.tr_template_parse(b, len(b), ctypes.byref(t), ctypes.byref(err)) != 0:
            return None, err.msg.decode(errors="replace")
        try:
            out = ctypes.c_void_p()
            opts = self.Opts(0, 0, 0, int(NOW.timestamp()))
            st = self.lib.tr_template_render(t, json.dumps(variables).encode(), ctypes.byref(opts),
                                             ctypes.byref(out), ctypes.byref(err))
            if st != 0:
                return None, err.msg.decode(errors="replace")
            text = ctypes.string_at(out.value).decode()
            self.libc.free(out)
            return text, None
        finally:
            self.lib.tr_template_free(t)


def reference_render(env, src, variables):
    """(text, None, is_raise_exception) or (None, message, is_raise_exception)."""
    try:
        tmpl = env.from_string(src)
    except jinja2.exceptions.TemplateError as e:
        return None, f"{type(e).__name__}: {e}", False
    try:
        return tmpl.render(**variables), None, False
    except jinja2.exceptions.TemplateError as e:
        raised = type(e) is jinja2.exceptions.TemplateError
        return None, str(e), raised
    except Exception as e:  # a Python error inside the template (TypeError ...)
        return None, f"{type(e).__name__}: {e}", False


def case_vars(case, add_generation_prompt):
    v = {"messages": case["messages"], "tools": case.get("tools"), "documents": None,
         "add_generation_prompt": add_generation_prompt, "bos_token": "<s>", "eos_token": "</s>"}
    return v


def compare_template(trinity, env, path):
    """Per case: 'equal', 'both_fail', 'unsupported', or 'MISMATCH: ...'."""
    src = open(path, encoding="utf-8").read()
    results = {}
    for name, case in CASES.items():
        for agp in (False, True):
            v = case_vars(case, agp)
            want, want_err, raised = reference_render(env, src, v)
            got, got_err = trinity.render(src, v)
            key = f"{name}/agp={int(agp)}"
            if want is not None:
                if got == want:
                    results[key] = "equal"
                elif got is None and "not supported" in got_err:
                    results[key] = f"unsupported: {got_err}"
                elif got is None:
                    results[key] = f"MISMATCH: jinja2 renders, Trinity fails: {got_err}"
                else:
                    i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]),
                             min(len(got), len(want)))
                    results[key] = (f"MISMATCH: output differs at byte {i}: jinja2 {want[max(0, i - 40):i + 40]!r} "
                                    f"vs Trinity {got[max(0, i - 40):i + 40]!r}")
            else:
                if got is not None:
                    results[key] = f"MISMATCH: jinja2 fails ({want_err}), Trinity renders"
                elif raised and want_err not in got_err:
                    results[key] = f"MISMATCH: raise_exception message {want_err!r} not in {got_err!r}"
                else:
                    results[key] = "both_fail"
    return results


@pytest.fixture(scope="module")
def trinity(lib):
    return Trinity(lib)


def test_templates_match_jinja2(trinity, record_property):
    files = template_files()
    assert len(files) >= 30, f"expected dozens of templates in {template_dir()}, found {len(files)}"
    env = reference_env()
    rows, n_equal_all, mismatches = [], 0, []
    for path in files:
        name = os.path.basename(path)
        res = compare_template(trinity, env, path)
        n_eq = sum(r == "equal" for r in res.values())
        n_both = sum(r == "both_fail" for r in res.values())
        n_uns = sum(r.startswith("unsupported") for r in res.values())
        bad = [f"{k}: {r}" for k, r in res.items() if r.startswith("MISMATCH")]
        mismatches += [f"{name} {b}" for b in bad]
        if bad:
            verdict = "MISMATCH"
        elif n_uns:
            verdict = "unsupported construct (clear error)"
        elif n_eq:
            verdict = "equal"
        else:
            verdict = "jinja2 fails too"
        if verdict in ("equal",):
            n_equal_all += 1
        rows.append((name, verdict, n_eq, n_both, n_uns, len(bad), len(res)))
        first_note = next((r for r in res.values() if r != "equal" and r != "both_fail"), "")
        rows[-1] += (first_note[:160],)
    report_dir = os.environ.get("TRINITY_TEST_REPORT_DIR", os.path.join(ROOT, "build", "test-reports"))
    os.makedirs(report_dir, exist_ok=True)
    with open(os.path.join(report_dir, "template_parity.md"), "w") as f:
        f.write(f"# Chat templates: Trinity vs jinja2 {jinja2.__version__}\n\n")
        f.write(f"{len(files)} templates from {template_dir()}, {len(CASES)} conversations x "
                "add_generation_prompt on/off each.\n\n")
        f.write(f"All cases agree: {n_equal_all} of {len(files)}\n\n")
        f.write("| template | result | equal | both fail | unsupported | mismatch | cases | note |\n")
        f.write("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
        for r in rows:
            note = r[7].replace("|", "\\|").replace("\n", " ")
            f.write(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]} | {note} |\n")
    record_property("templates", len(files))
    record_property("templates_all_equal", n_equal_all)
    assert not mismatches, f"{len(mismatches)} case(s) differ from jinja2:\n" + "\n".join(mismatches[:40])
    # jinja2 itself fails on every case of a template only when it uses what jinja2 lacks (e.g. a from_json filter)
    usable = [r for r in rows if r[1] != "jinja2 fails too"]
    assert n_equal_all >= 0.9 * len(files), f"only {n_equal_all} of {len(files)} templates agree on every case"
    assert usable, "no template rendered"
