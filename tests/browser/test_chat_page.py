"""Chapter 11's chat page in a real browser: type "hi", press Send, watch the streamed reply arrive.

The tiny chat model (tests/conftest.py's ``trained_chat``: "hi" -> "yo", "bye" -> "ciao") is served on a
free port of 127.0.0.1; headless Chromium opens ``/``, sends two messages, and the test checks that each
reply streams into its own assistant message (``data-done`` is set when the stream ends), that the second
request carried the whole conversation, and that the page logged no error. Screenshots go to
``artifacts/browser/``. Only ``make test-browser`` runs this (it sets ``MINIGPT_BROWSER_TEST=1``).
"""

from __future__ import annotations

import json
import os

import pytest

if os.environ.get("MINIGPT_BROWSER_TEST") != "1":
    pytest.skip("real-browser test: run `make test-browser` (needs Chromium and Playwright)",
                allow_module_level=True)

MODEL = "tiny-chat"
REPLY = "#messages .assistant"


@pytest.fixture(scope="module")
def chat_server(trained_chat):
    from minigpt_helpers.finetune.chat import load_chat_model
    from minigpt_helpers.serve.server import create_app, serve_in_background

    model = load_chat_model(trained_chat[1], device="cpu")
    with serve_in_background(create_app(model, MODEL, slots=2)) as server:
        yield server


def test_chat_page_streams_replies(page, chat_server, artifacts):
    problems: list[str] = []  # console errors and uncaught exceptions of the page
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    sent: list[dict] = []  # the bodies the page POSTed to the chat endpoint
    page.on("request", lambda r: sent.append(json.loads(r.post_data)) if r.url.endswith("/v1/chat/completions")
            else None)
    page.goto(chat_server.url + "/")
    page.wait_for_function("(name) => document.getElementById('model').textContent === name", arg=MODEL)

    page.fill("#input", "hi")
    page.click("#send")
    page.locator(f"{REPLY}[data-done]").first.wait_for()
    assert page.locator("#messages .user").all_inner_texts() == ["hi"]
    assert page.locator(REPLY).all_inner_texts() == ["yo"]
    page.screenshot(path=str(artifacts / "chat_page_first_reply.png"))

    page.fill("#input", "bye")
    page.keyboard.press("Enter")  # Enter sends too
    page.locator(f"{REPLY}[data-done]").nth(1).wait_for()
    assert page.locator(REPLY).all_inner_texts() == ["yo", "ciao"]
    assert page.locator("#messages .error").count() == 0
    assert page.input_value("#input") == ""
    page.screenshot(path=str(artifacts / "chat_page.png"))

    assert [b["stream"] for b in sent] == [True, True] and {b["model"] for b in sent} == {MODEL}
    assert sent[1]["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                   {"role": "user", "content": "bye"}]  # the conversation is kept
    assert problems == []

    page.click("#reset")  # a new chat forgets the conversation
    assert page.locator("#messages .message").count() == 0
