"""Chapter 11's OpenAI-compatible server, over real HTTP: the official ``openai`` client against uvicorn.

The tiny chat model (tests/conftest.py's ``trained_chat``: "hi" -> "yo", "bye" -> "ciao") and an untrained
text continuer (tests/tiny_chat.py's ``tiny_model``) are each served on a free port of 127.0.0.1. The tests
check the answers and their OpenAI shapes, streaming (the deltas join to the non-streamed reply), 16
concurrent requests on 4 slots, the error JSON of every kind of bad request, a client that disconnects
mid-stream (its request is cancelled in the engine), an engine failure (a 500, and the server goes on),
and the ``serve`` command line.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import httpx
import pytest
from openai import BadRequestError, NotFoundError, OpenAI
from tiny_chat import tiny_model

from minigpt_helpers import find_checkpoint
from minigpt_helpers.cli import main
from minigpt_helpers.finetune.chat import chat_text, load_chat_model, render_conversation
from minigpt_helpers.serve.server import StopStrings, create_app, default_model_name, serve_in_background

pytestmark = pytest.mark.usefixtures("one_thread")

CHAT_MODEL, PLAIN_MODEL = "tiny-chat", "tiny-plain"
BLOCK_SIZE = 32  # tiny_model()'s context
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def chat_server(trained_chat):
    model = load_chat_model(trained_chat[1], device="cpu")
    with serve_in_background(create_app(model, CHAT_MODEL, slots=4)) as server:
        yield server


@pytest.fixture(scope="module")
def plain_server():
    with serve_in_background(create_app(tiny_model(), PLAIN_MODEL, slots=2)) as server:
        yield server


@pytest.fixture(scope="module")
def client(chat_server):
    return OpenAI(base_url=f"{chat_server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def chat(client: OpenAI, *turns: str, **kw) -> str:
    """The tiny chat model's greedy reply to user and assistant ``turns`` in turn."""
    messages = [{"role": ("user", "assistant")[k % 2], "content": t} for k, t in enumerate(turns)]
    reply = client.chat.completions.create(model=CHAT_MODEL, messages=messages, temperature=0, **kw)
    return reply.choices[0].message.content


# ----------------------------------------------------------------------------------------------- answers
def test_models_list(client, chat_server):
    assert [m.id for m in client.models.list()] == [CHAT_MODEL]
    assert client.models.retrieve(CHAT_MODEL).owned_by == "minigpt"
    with pytest.raises(NotFoundError):
        client.models.retrieve("gpt-4")
    page = httpx.get(f"{chat_server.url}/v1/models", timeout=30).json()
    assert page["object"] == "list" and page["data"][0]["object"] == "model"


def test_chat_completion(client, trained_chat):
    reply = client.chat.completions.create(model=CHAT_MODEL, messages=HI, temperature=0)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-") and reply.model == CHAT_MODEL
    (choice,) = reply.choices
    assert (choice.index, choice.message.role, choice.message.content, choice.finish_reason) == (
        0, "assistant", "yo", "stop")
    prompt, _ = render_conversation(load_chat_model(trained_chat[1], device="cpu").tokenizer, HI,
                                    add_generation_prompt=True)
    assert reply.usage.prompt_tokens == len(prompt) == 6
    assert reply.usage.completion_tokens == 3  # "y", "o" and the <|end|> that closed the turn (not text)
    assert reply.usage.total_tokens == 9
    assert chat(client, "hi", "yo", "bye") == "ciao"  # the whole conversation is the prompt
    assert chat(client, "bye", max_tokens=1) == "c"  # cut by max_tokens
    cut = client.chat.completions.create(model=CHAT_MODEL, messages=HI, temperature=0, max_completion_tokens=1)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("y", "length")


def test_streamed_chat_joins_to_the_reply(client):
    for turns in (["hi"], ["hi", "yo", "bye"]):
        messages = [{"role": ("user", "assistant")[k % 2], "content": t} for k, t in enumerate(turns)]
        chunks = list(client.chat.completions.create(model=CHAT_MODEL, messages=messages, temperature=0,
                                                     stream=True, stream_options={"include_usage": True}))
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        assert len({c.id for c in chunks}) == 1
        assert chunks[0].choices[0].delta.role == "assistant"  # the role first, then the content
        deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert "".join(deltas) == chat(client, *turns)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len("".join(deltas)) + 1


def test_the_event_stream_itself(chat_server):
    """The raw server-sent events: ``data: {json}`` blocks, the content between the role and the end, ``[DONE]``."""
    body = {"model": CHAT_MODEL, "messages": HI, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{chat_server.url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode("utf-8")
    events = text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""] and all(e.startswith("data: ") for e in events[:-1])
    chunks = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": ""}, {"content": "y"},
                                                          {"content": "o"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]


def test_completions(chat_server):
    """/v1/completions continues text as it is: the template typed by hand, special tokens included."""
    client = OpenAI(base_url=f"{chat_server.url}/v1", api_key="unused", max_retries=0)
    prompt = chat_text(HI, add_generation_prompt=True)
    out = client.completions.create(model=CHAT_MODEL, prompt=prompt, max_tokens=3, temperature=0)
    assert out.object == "text_completion" and out.id.startswith("cmpl-")
    assert (out.choices[0].text, out.choices[0].finish_reason) == ("yo<|end|>", "length")
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (6, 3)
    stopped = client.completions.create(model=CHAT_MODEL, prompt=prompt, max_tokens=8, temperature=0,
                                        stop=["<|end|>"])
    assert (stopped.choices[0].text, stopped.choices[0].finish_reason) == ("yo", "stop")
    pieces = [c.choices[0].text for c in client.completions.create(
        model=CHAT_MODEL, prompt=prompt, max_tokens=3, temperature=0, stream=True)]
    assert "".join(pieces) == "yo<|end|>" and pieces[-1] == ""


def test_seeded_sampling_repeats(plain_server):
    client = OpenAI(base_url=f"{plain_server.url}/v1", api_key="unused", max_retries=0)
    kw = dict(model=PLAIN_MODEL, prompt="the", max_tokens=12, temperature=1.0, seed=7)
    first = client.completions.create(**kw)
    assert first.usage.prompt_tokens == 3 and 1 <= first.usage.completion_tokens <= 12
    assert client.completions.create(**kw).choices[0].text == first.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kw, stream=True))
    assert streamed == first.choices[0].text


def test_sixteen_concurrent_requests(client):
    """More requests than slots (4): the waiting ones take the slots the finished ones free."""
    asks = [(["hi"], "yo"), (["bye"], "ciao"), (["hi there"], "yo"), (["ok bye"], "ciao"),
            (["hi", "yo", "bye"], "ciao"), (["bye", "ciao", "hi"], "yo")]
    jobs = [asks[k % len(asks)] for k in range(16)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        replies = list(pool.map(lambda job: chat(client, *job[0]), jobs))
    assert replies == [want for _, want in jobs]


def test_a_text_continuer_has_no_chat_endpoint(plain_server):
    client = OpenAI(base_url=f"{plain_server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(model=PLAIN_MODEL, messages=HI)
    assert "/v1/completions" in refused.value.message and refused.value.param == "model"
    out = client.completions.create(model=PLAIN_MODEL, prompt="", max_tokens=4, temperature=0)
    assert out.usage.prompt_tokens == 1  # an empty prompt starts from <|endoftext|>


# ----------------------------------------------------------------------------------------------- errors
M = CHAT_MODEL
CHAT, COMPLETE = "/v1/chat/completions", "/v1/completions"
BAD_REQUESTS = [  # (path, body, status, param, code)
    (CHAT, {"model": "gpt-4", "messages": HI}, 404, "model", "model_not_found"),
    (COMPLETE, {"model": "gpt-4", "prompt": "hi"}, 404, "model", "model_not_found"),
    (CHAT, {"messages": HI}, 400, "model", None),
    (CHAT, {"model": M}, 400, "messages", None),
    (COMPLETE, {"model": M}, 400, "prompt", None),
    (CHAT, {"model": M, "messages": []}, 400, "messages", None),
    (CHAT, {"model": M, "messages": "hi"}, 400, "messages", None),
    (CHAT, {"model": M, "messages": ["hi"]}, 400, "messages[0]", None),
    (CHAT, {"model": M, "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role", "invalid_value"),
    (CHAT, {"model": M, "messages": [{"role": "tool", "content": "hi"}]}, 400, "messages[0].role", "invalid_value"),
    (CHAT, {"model": M, "messages": [{"role": "user"}]}, 400, "messages[0].content", None),
    (CHAT, {"model": M, "messages": HI, "temperature": 2.5}, 400, "temperature", "invalid_value"),
    (CHAT, {"model": M, "messages": HI, "temperature": -0.1}, 400, "temperature", "invalid_value"),
    (CHAT, {"model": M, "messages": HI, "temperature": "hot"}, 400, "temperature", None),
    (CHAT, {"model": M, "messages": HI, "temperature": True}, 400, "temperature", None),
    (COMPLETE, {"model": M, "prompt": "hi", "temperature": "0.5"}, 400, "temperature", None),
    (CHAT, {"model": M, "messages": HI, "top_p": 0}, 400, "top_p", "invalid_value"),
    (CHAT, {"model": M, "messages": HI, "top_p": 1.5}, 400, "top_p", "invalid_value"),
    (CHAT, {"model": M, "messages": HI, "max_tokens": 0}, 400, "max_tokens", "invalid_value"),
    (COMPLETE, {"model": M, "prompt": "hi", "max_tokens": -3}, 400, "max_tokens", "invalid_value"),
    (COMPLETE, {"model": M, "prompt": "hi", "max_tokens": BLOCK_SIZE + 1}, 400, "max_tokens", "invalid_value"),
    (CHAT, {"model": M, "messages": HI, "max_completion_tokens": 10_000}, 400, "max_completion_tokens",
     "invalid_value"),
    (CHAT, {"model": M, "messages": HI, "max_tokens": 2.5}, 400, "max_tokens", None),
    (CHAT, {"model": M, "messages": HI, "n": 2}, 400, "n", None),
    (CHAT, {"model": M, "messages": HI, "seed": -1}, 400, "seed", "invalid_value"),
    (CHAT, {"model": M, "messages": HI, "stream": "yes"}, 400, "stream", None),
    (COMPLETE, {"model": M, "prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "invalid_value"),
    (COMPLETE, {"model": M, "prompt": "hi", "stop": ""}, 400, "stop", "invalid_value"),
    (COMPLETE, {"model": M, "prompt": "HI"}, 400, "prompt", "invalid_value"),  # not in the tokenizer's alphabet
    (COMPLETE, {"model": M, "prompt": []}, 400, "prompt", "invalid_value"),
    (COMPLETE, {"model": M, "prompt": [10_000]}, 400, "prompt", "invalid_value"),
    (COMPLETE, {"model": M, "prompt": "hi " * 20}, 400, "prompt", "context_length_exceeded"),
    (CHAT, {"model": M, "messages": [{"role": "user", "content": "hi " * 20}]}, 400, "messages",
     "context_length_exceeded"),
]
RAW_BODIES = [b"{not json", b'{"model": "tiny-chat", "messages": [', b"[1, 2]", b'"hi"', b""]


def assert_openai_error(response: httpx.Response, status: int, param: str | None, code: str | None) -> None:
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    body = response.json()
    assert list(body) == ["error"] and sorted(body["error"]) == ["code", "message", "param", "type"]
    error = body["error"]
    assert error["type"] == "invalid_request_error" and isinstance(error["message"], str) and error["message"]
    assert (error["param"], error["code"]) == (param, code), error


@pytest.mark.parametrize("path, body, status, param, code", BAD_REQUESTS,
                         ids=[f"{k}-{case[3]}" for k, case in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_openai_errors(chat_server, path, body, status, param, code):
    assert_openai_error(httpx.post(chat_server.url + path, json=body, timeout=30), status, param, code)


@pytest.mark.parametrize("raw", RAW_BODIES)
def test_bodies_that_are_not_a_json_object(chat_server, raw):
    for path in (CHAT, COMPLETE):
        response = httpx.post(chat_server.url + path, content=raw, headers={"content-type": "application/json"},
                              timeout=30)
        assert_openai_error(response, 400, None, None)


def test_unknown_urls_and_methods(chat_server):
    assert_openai_error(httpx.get(f"{chat_server.url}/v1/embeddings", timeout=30), 404, None, None)
    assert_openai_error(httpx.get(f"{chat_server.url}{CHAT}", timeout=30), 405, None, None)


def test_the_client_sees_the_error(client):
    with pytest.raises(BadRequestError) as bad:
        client.chat.completions.create(model=CHAT_MODEL, messages=HI, temperature=3)
    assert (bad.value.status_code, bad.value.param, bad.value.code) == (400, "temperature", "invalid_value")
    with pytest.raises(NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4", messages=HI)
    assert missing.value.code == "model_not_found"


# ----------------------------------------------------------------------------------------------- robustness
@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "not-streamed"])
def test_a_client_that_hangs_up_is_cancelled(chat_server, client, monkeypatch, stream):
    """The engine is held still while the client hangs up (streamed: after reading the first event, the
    role; not streamed: when its read times out): the server must cancel the request, freeing its slot
    before a single token is generated, then serve on."""
    worker = chat_server.app.state.worker
    engine = worker.engine
    go, cancelled, cancel_seen = threading.Event(), [], threading.Event()
    real_step, real_cancel = engine.step, engine.cancel

    def held_step() -> bool:
        go.wait()
        return real_step()

    def spied_cancel(request) -> None:
        cancelled.append(request)
        real_cancel(request)
        cancel_seen.set()

    monkeypatch.setattr(engine, "step", held_step)
    monkeypatch.setattr(engine, "cancel", spied_cancel)
    body = {"model": CHAT_MODEL, "messages": HI, "temperature": 0, "stream": stream, "max_tokens": BLOCK_SIZE}
    try:
        if stream:
            with httpx.Client(timeout=30) as http:
                with http.stream("POST", f"{chat_server.url}{CHAT}", json=body) as response:
                    first = next(response.iter_lines())
            assert json.loads(first[len("data: "):])["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        else:
            with pytest.raises(httpx.ReadTimeout):  # no answer can come while the engine is held
                httpx.post(f"{chat_server.url}{CHAT}", json=body, timeout=httpx.Timeout(30, read=0.5))
        assert cancel_seen.wait(30), "the server did not cancel the request of a client that hung up"
    finally:
        go.set()
    deadline = time.monotonic() + 30
    while worker.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.pending == 0
    (request,) = cancelled
    assert (request.finish_reason, request.new_ids) == ("cancelled", [])
    assert chat(client, "hi") == "yo"


def test_an_engine_failure_is_a_500_and_the_server_goes_on(chat_server, client, monkeypatch):
    worker = chat_server.app.state.worker
    failing = worker.engine

    def broken_step() -> bool:
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(failing, "step", broken_step)
    response = httpx.post(f"{chat_server.url}{CHAT}", json={"model": CHAT_MODEL, "messages": HI}, timeout=30)
    assert response.status_code == 500 and "Traceback" not in response.text
    error = response.json()["error"]
    assert error["type"] == "server_error" and "simulated failure" in error["message"]
    assert worker.engine is not failing  # a fresh engine took over
    assert chat(client, "hi") == "yo"


def test_stop_strings_hold_back_what_may_begin_one():
    stops = StopStrings(["<|end|>", "xyz"])
    assert [stops.push(p) for p in ["ab", "c<", "|e", "nd|>tail"]] == ["ab", "c", "", ""]
    assert stops.hit and stops.push("more") == "" and stops.flush() == ""
    broken = StopStrings(["<|end|>", "xyz"])  # a held tail that turns out not to begin a stop string is shown
    assert [broken.push(p) for p in ["<|ex", "y", "yz"]] == ["<|e", "", "xyyz"] and not broken.hit
    open_end = StopStrings(["xyz"])
    assert (open_end.push("abx"), open_end.hit, open_end.flush()) == ("ab", False, "x")


def test_the_chat_page(chat_server):
    response = httpx.get(chat_server.url + "/", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert page == resources.files("minigpt_helpers.serve").joinpath("chat.html").read_text(encoding="utf-8")
    for element in ('id="messages"', 'id="input"', 'id="send"', "/v1/chat/completions", "stream: true"):
        assert element in page
    assert re.search(r"\b(src|href)\s*=|<link|@import|https?://", page) is None  # nothing loaded from elsewhere
    assert httpx.get(chat_server.url + "/favicon.ico", timeout=30).status_code == 204  # no 404 in the console


# ----------------------------------------------------------------------------------------------- the command line
def test_serve_refuses_bad_arguments_in_one_line(tmp_path, trained_chat, capsys):
    assert main(["serve", "--checkpoint", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no checkpoint in") and err.count("\n") == 1
    for flag, value, says in [("--port", "70000", "--port must be a port"), ("--slots", "0", "--slots must be")]:
        with pytest.raises(SystemExit) as exited:
            main(["serve", "--checkpoint", str(trained_chat[1]), flag, value])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and err.startswith(f"error: {says}") and err.count("\n") == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["serve", "--checkpoint", str(trained_chat[1]), "--port", port, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and err.count("\n") == 1


def test_the_default_model_name(trained_chat):
    out = trained_chat[1]
    assert default_model_name(out) == default_model_name(find_checkpoint(out)) == out.name  # "sft"


def read_line(stream, timeout: float) -> str:
    """The next line of a subprocess's pipe, or a failure after ``timeout`` seconds."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no line within {timeout} s")


@pytest.mark.slow
def test_the_command_line_serves_until_ctrl_c(trained_chat):
    out = trained_chat[1]
    proc = subprocess.Popen([sys.executable, "-m", "minigpt_helpers", "serve", "--checkpoint", str(out),
                             "--port", "0", "--slots", "2", "--device", "cpu", "--int8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")
    try:
        line = read_line(proc.stdout, 180)
        found = re.search(r"(http://127\.0\.0\.1:\d+)/ ", line)
        assert found, line + proc.stderr.read() if proc.poll() is not None else line
        url = found[1]
        assert [m["id"] for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]] == [out.name]
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model=out.name, messages=HI, temperature=0)
        assert reply.choices[0].message.content == "yo"  # int8 too: its greedy margins here are > 5 logits
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and rest == ""  # one line said where it listens, and that was all
