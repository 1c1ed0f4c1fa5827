"""An OpenAI-compatible server for a MiniGPT model, with continuous batching and a chat page (chapter 11).

    python -m minigpt_helpers serve --checkpoint runs/sft     # then open http://127.0.0.1:8000/

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="sft", messages=[{"role": "user", "content": "hi"}])

**The API** is OpenAI's, so its official clients and the tools built on them work unchanged:
``GET /v1/models`` (the one model), ``POST /v1/completions`` (text in, text out: any model) and
``POST /v1/chat/completions`` (a chat model of chapter 08: the messages are laid out with the course's one
template, :func:`~minigpt_helpers.finetune.chat.render_conversation`, and the reply ends at ``<|end|>``).
With ``"stream": true`` the text comes as server-sent events, ``data: {chunk}`` lines ending with
``data: [DONE]``. ``GET /`` serves a small chat page (``chat.html``) that uses the same endpoint.

**One thread runs the model.** Requests arrive on asyncio's event loop, which must never wait for the model.
A :class:`BatchWorker` thread owns the :class:`~minigpt_helpers.model.batch.BatchEngine`: it steps the engine
while it has work (each step decodes one token of every running request, as one batch) and sleeps on a
condition when it has none. Each new token goes back to the loop with ``loop.call_soon_threadsafe`` onto its
request's ``asyncio.Queue``, and the loop turns the tokens into text with a
:class:`~minigpt_helpers.model.generation.StreamDecoder`, so a multi-byte character is never split between
two chunks. The token that ends a reply (``<|end|>``, ``<|endoftext|>``) is counted but is not text.

**Errors** are OpenAI's JSON, ``{"error": {"message", "type", "param", "code"}}``, with a 4xx status for
every bad request (a 400 for a malformed one, never FastAPI's 422), so a client shows the message and
no traceback reaches it. A client that goes away mid-reply has its request cancelled in the engine,
which frees its batch row for the next one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..finetune.chat import ROLES, ChatTokenizer, render_conversation
from ..model.batch import BatchEngine, BatchRequest
from ..model.generation import StreamDecoder, encode_prompt

__all__ = [
    "APIError",
    "BatchWorker",
    "RunningServer",
    "StopStrings",
    "create_app",
    "load_serving_model",
    "serve",
    "serve_in_background",
]

log = logging.getLogger(__name__)

COMPLETIONS_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; a chat reply may fill the context
MAX_STOP_STRINGS = 4  # as OpenAI allows
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may hold the stream back
NOT_A_CHAT_MODEL = ("this model has no chat tokens: it continues text and was never finetuned to chat. Use "
                    "/v1/completions, or serve a chat model finetuned with sft() (chapter 08)")


# ------------------------------------------------------------------------------ errors
class APIError(Exception):
    """A request the server refuses: answered with ``status`` and OpenAI's error JSON (see :meth:`body`)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


# What each field must be, for the message about a value of the wrong type.
EXPECTED = {"model": "a string", "prompt": "a string (or a list of token ids)", "messages": "a list of messages",
            "max_tokens": "an integer", "max_completion_tokens": "an integer", "temperature": "a number",
            "top_p": "a number", "top_k": "an integer", "seed": "an integer", "stream": "true or false",
            "stop": "a string or a list of strings", "n": "an integer", "stream_options": "an object"}


def validation_error(errors: Sequence[Any]) -> APIError:
    """FastAPI's validation errors (a body that is not JSON, a field missing or of the wrong type) as a 400."""
    first = dict(errors[0]) if errors else {}
    kind, loc = first.get("type"), [p for p in first.get("loc", ()) if p != "body"]
    if kind == "json_invalid":
        error = first.get("ctx", {}).get("error", "")
        return APIError(400, f"the request body is not valid JSON ({error}): send a JSON object")
    if not loc or not isinstance(loc[0], str):
        return APIError(400, "the request body must be a JSON object, e.g. {\"model\": ..., \"messages\": [...]}")
    param = loc[0] + "".join(f"[{p}]" for p in loc[1:] if isinstance(p, int))
    if kind == "missing":
        return APIError(400, f"missing required parameter: '{param}'", param)
    shown = json.dumps(first.get("input"), default=str)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    expected = EXPECTED.get(loc[0], "another value")
    if loc[0] == "messages" and len(loc) > 1:  # one message of the list
        expected = 'a message, {"role": ..., "content": ...}'
    return APIError(400, f"invalid type for '{param}': expected {expected}, got {shown}", param)


# ------------------------------------------------------------------------------ request bodies
Number = StrictInt | StrictFloat  # a JSON number: true, false and "0.5" are refused


class SamplingBody(BaseModel):
    """The fields both endpoints share. Other OpenAI fields (user, logit_bias...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr
    max_tokens: StrictInt | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: StrictInt | None = None
    seed: StrictInt | None = None
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    stop: StrictStr | list[StrictStr] | None = None
    n: StrictInt | None = None


class CompletionBody(SamplingBody):
    prompt: StrictStr | list[StrictInt]


class ChatBody(SamplingBody):
    messages: list[dict[str, Any]]
    max_completion_tokens: StrictInt | None = None  # the newer name of max_tokens


def sampling_args(body: SamplingBody, max_tokens: int | None, default_max: int, block_size: int,
                  max_param: str = "max_tokens") -> dict[str, Any]:
    """The engine's sampling arguments from a checked body; an :class:`APIError` naming the first bad one.

    ``max_tokens`` (given as ``max_param``) may be at most ``block_size``: one reply no longer than the
    model's context (past it, the engine's window policy keeps generating, from the last half-window only).
    """
    if body.n not in (None, 1):
        raise APIError(400, f"n must be 1: this server returns one choice per request, got {body.n}", "n")
    max_tokens = default_max if max_tokens is None else max_tokens
    if max_tokens < 1:
        raise APIError(400, f"{max_param} must be an integer >= 1, got {max_tokens}", max_param, "invalid_value")
    if max_tokens > block_size:
        raise APIError(400, f"{max_param} is {max_tokens}, but this model's context is {block_size} tokens: "
                            f"ask for at most {block_size}", max_param, "invalid_value")
    temperature = 1.0 if body.temperature is None else body.temperature
    if not 0 <= temperature <= 2:  # NaN fails too
        raise APIError(400, f"temperature must be a number in [0, 2] (0 = greedy), got {temperature}",
                       "temperature", "invalid_value")
    if body.top_p is not None and not 0 < body.top_p <= 1:
        raise APIError(400, f"top_p must be a number in (0, 1], got {body.top_p}", "top_p", "invalid_value")
    if body.top_k is not None and body.top_k < 1:
        raise APIError(400, f"top_k must be an integer >= 1, got {body.top_k}", "top_k", "invalid_value")
    if body.seed is not None and not 0 <= body.seed < 2**63:
        raise APIError(400, f"seed must be an integer in [0, 2**63), got {body.seed}", "seed", "invalid_value")
    return dict(max_new_tokens=max_tokens, temperature=temperature, top_k=body.top_k, top_p=body.top_p,
                seed=body.seed)


def stop_strings(stop: str | list[str] | None) -> list[str]:
    """``stop`` as a list of at most four non-empty strings; an :class:`APIError` otherwise."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_STRINGS or not all(stops):
        raise APIError(400, f"stop must be a string or a list of at most {MAX_STOP_STRINGS} non-empty strings, "
                            f"got {stop!r}", "stop", "invalid_value")
    return stops


def chat_messages(raw: list[dict[str, Any]]) -> list[dict[str, str]]:
    """OpenAI's messages as the course's ``{"role", "content"}`` dicts: text only, roles of :data:`ROLES`.

    ``developer`` (OpenAI's newer name for ``system``) is read as ``system``; content given as a list of
    text parts is joined.
    """
    if not raw:
        raise APIError(400, 'messages must be a non-empty list, e.g. [{"role": "user", "content": "hi"}]',
                       "messages")
    out = []
    for k, message in enumerate(raw):
        role = "system" if message.get("role") == "developer" else message.get("role")
        if role not in ROLES:
            raise APIError(400, f"messages[{k}].role must be one of {', '.join(ROLES)} (this model has no tools), "
                                f"got {message.get('role')!r}", f"messages[{k}].role", "invalid_value")
        content = message.get("content")
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                             and isinstance(p.get("text"), str) for p in content):
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise APIError(400, f"messages[{k}].content must be a string (or a list of text parts), got "
                                f"{json.dumps(content, default=str)[:60]}", f"messages[{k}].content")
        out.append({"role": role, "content": content})
    return out


def prompt_ids(tokenizer: Any, prompt: str | list[int]) -> list[int]:
    """The ids of a completion's ``prompt`` (text, or token ids as they are); an empty one is ``[eot_id]``.

    Special-token strings in the text are read as those tokens, as :func:`generate` does: a completion
    prompt is the caller's own text, so it may lay out a conversation itself.
    """
    if isinstance(prompt, list):
        if not prompt or not all(0 <= i < tokenizer.vocab_size for i in prompt):
            raise APIError(400, f"a prompt of token ids must be a non-empty list of ids in [0, "
                                f"{tokenizer.vocab_size})", "prompt", "invalid_value")
        return list(prompt)
    try:
        return encode_prompt(tokenizer, prompt)
    except ValueError as e:
        raise APIError(400, f"the prompt cannot be encoded by this model's tokenizer: {e}", "prompt",
                       "invalid_value") from None


def check_prompt_length(n_tokens: int, block_size: int, param: str) -> None:
    """A 400 (``context_length_exceeded``) for a prompt the model cannot see whole."""
    if n_tokens > block_size:
        raise APIError(400, f"this model's maximum context length is {block_size} tokens, but the {param} take "
                            f"{n_tokens} tokens: shorten them", param, "context_length_exceeded")


# ------------------------------------------------------------------------------ the engine thread
class BatchWorker:
    """The one thread that runs the model: it owns a :class:`BatchEngine` and steps it while there is work.

    :meth:`submit` and :meth:`cancel` may be called from any thread (the event loop's); the engine's
    callbacks run on this thread. Idle, the thread sleeps on a condition that :meth:`submit`, :meth:`cancel`
    and :meth:`stop` notify: it never spins. If a step raises (a bug, or the GPU out of memory), every
    request in flight gets ``on_error`` and a fresh engine takes over, so the server keeps serving.
    """

    def __init__(self, model: torch.nn.Module, slots: int = 16) -> None:
        self.model, self.slots = model, slots
        self.engine = BatchEngine(model, slots)
        self._wake = threading.Condition()  # guards _stopping; the thread waits on it when idle
        self._engine_lock = threading.Lock()  # submit / cancel against replacing a failed engine
        self._live_lock = threading.Lock()  # guards _live; never held while calling the engine
        self._live: dict[object, Callable[[str], None]] = {}  # each request in flight -> its on_error
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Requests running or waiting in the engine."""
        return self.engine.pending

    def start(self) -> None:
        """Start the thread (again, after :meth:`stop`)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="minigpt-batch-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread after its current step (requests still queued are left unanswered)."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, prompt_ids: Sequence[int], *, on_token: Callable[[BatchRequest, int], None],
               on_finish: Callable[[BatchRequest], None], on_error: Callable[[str], None],
               stop_ids: Sequence[int] = (), **sampling: Any) -> BatchRequest:
        """Queue a request in the engine (its ValueError for bad arguments passes through) and wake the thread."""
        key = object()

        def finished(request: BatchRequest) -> None:
            with self._live_lock:
                self._live.pop(key, None)
            on_finish(request)

        with self._live_lock:
            self._live[key] = on_error
        try:
            with self._engine_lock:
                request = self.engine.submit(list(prompt_ids), stop_ids=stop_ids, on_token=on_token,
                                             on_finish=finished, **sampling)
        except BaseException:
            with self._live_lock:
                self._live.pop(key, None)
            raise
        with self._wake:
            self._wake.notify()
        return request

    def cancel(self, request: BatchRequest) -> None:
        """Cancel a request that has not finished; the engine frees its slot at its next step."""
        with self._engine_lock:
            if request.finished:
                return
            self.engine.cancel(request)
        with self._wake:
            self._wake.notify()

    def _run(self) -> None:
        torch.set_grad_enabled(False)  # for this thread only: serving never needs gradients
        while True:
            with self._wake:
                while not self._stopping and self.engine.pending == 0:
                    self._wake.wait()
                if self._stopping:
                    return
            try:
                self.engine.step()
            except Exception as e:  # noqa: BLE001 - answer the clients, keep serving
                log.exception("the batch engine failed; the requests in flight get an error")
                self._recover(f"the model failed while generating: {type(e).__name__}: {e}")

    def _recover(self, message: str) -> None:
        """After a failed step: a fresh engine, and ``on_error`` for every request the old one held."""
        with self._engine_lock:
            self.engine = BatchEngine(self.model, self.slots)
            with self._live_lock:
                failed, self._live = list(self._live.values()), {}
        for on_error in failed:
            on_error(message)


# ------------------------------------------------------------------------------ text
class StopStrings:
    """Cut a streamed text at the first of some stop strings, holding back what might begin one.

    :meth:`push` takes each new piece and returns the text that is safe to show: a tail that could be the
    start of a stop string waits for the next piece. Once a stop string appears, :attr:`hit` is True and
    everything from it on is dropped. :meth:`flush` gives back what is held when the text ends.
    """

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""
        self.hit = False

    def push(self, piece: str) -> str:
        if self.hit:
            return ""
        text = self.held + piece
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if found:
            self.hit, self.held = True, ""
            return text[: min(found)]
        keep = max((k for s in self.stops for k in range(1, min(len(s), len(text) + 1))
                    if text.endswith(s[:k])), default=0)
        self.held = text[len(text) - keep:]
        return text[: len(text) - keep]

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


class Job:
    """One request in flight, seen from the event loop: the engine's tokens arrive on an asyncio queue.

    :meth:`pieces` yields the reply's text as it forms; afterwards :attr:`finish_reason` is ``"stop"`` or
    ``"length"`` and :attr:`completion_tokens` counts the tokens generated (the one that ended it too).
    """

    def __init__(self, worker: BatchWorker, tokenizer: Any, prompt: list[int], stop_ids: Sequence[int],
                 stops: Sequence[str], sampling: dict[str, Any]) -> None:
        self.worker = worker
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.decoder = StreamDecoder(tokenizer, prompt)
        self.stop_ids = {int(i) for i in stop_ids}
        self.stops = StopStrings(stops)
        self.prompt_tokens, self.completion_tokens = len(prompt), 0
        self.finish_reason: str | None = None
        self.closed = False
        try:
            self.request = worker.submit(prompt, stop_ids=sorted(self.stop_ids), on_token=self._on_token,
                                         on_finish=self._on_finish, on_error=self._on_error, **sampling)
        except ValueError as e:  # what the checks above let through and the engine refuses
            raise APIError(400, str(e)) from None

    # the engine thread's callbacks: hand each event to the loop
    def _send(self, event: tuple[str, Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop has closed (the server is shutting down): nobody is listening
            pass

    def _on_token(self, request: BatchRequest, token_id: int) -> None:
        self._send(("token", int(token_id)))

    def _on_finish(self, request: BatchRequest) -> None:
        self._send(("finish", request.finish_reason))

    def _on_error(self, message: str) -> None:
        self._send(("error", message))

    @property
    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    async def pieces(self) -> AsyncIterator[str]:
        """The reply's text in pieces, each as soon as it forms whole characters (and passes the stop strings)."""
        while self.finish_reason is None:
            kind, value = await self.queue.get()
            if kind == "error":
                raise APIError(500, value, kind="server_error")
            if kind == "token":
                self.completion_tokens += 1
                text = "" if value in self.stop_ids else self.decoder.push(value)
            else:
                text = self.decoder.flush()
                self.finish_reason = "length" if value == "length" else "stop"
            out = self.stops.push(text)
            if self.stops.hit:
                self.finish_reason = "stop"
                self.close()
            elif self.finish_reason is not None:
                out += self.stops.flush()
            if out:
                yield out

    def close(self) -> None:
        """Cancel the request in the engine unless it has finished (a client gone, a stop string met); once."""
        if not self.closed and not self.request.finished:
            self.worker.cancel(self.request)
        self.closed = True


async def cancel_on_disconnect(request: Request, job: Job) -> None:
    """Wait for the client to go away (the body has been read), then cancel its job."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            job.close()
            return


async def collect(request: Request, job: Job) -> str:
    """The whole reply of a non-streamed request; cancelled if the client disconnects while it waits."""
    watcher = asyncio.create_task(cancel_on_disconnect(request, job))
    try:
        return "".join([piece async for piece in job.pieces()])
    finally:
        watcher.cancel()
        job.close()


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def event_stream(request: Request, job: Job, chunk: Callable[[dict[str, Any], str | None], dict[str, Any]],
                       opening: dict[str, Any] | None, with_usage: bool) -> AsyncIterator[str]:
    """Server-sent events of a streamed reply: ``chunk(choice_fields, finish_reason)`` makes each chunk.

    ``opening`` (the chat's ``{"role": "assistant"}`` delta) comes first, then one chunk per piece of
    text, one with the finish reason, the usage if asked for, and ``[DONE]``. However the stream ends,
    the request is cancelled in the engine: a client that disconnects is noticed at once (by the watcher
    here, and by Starlette, which then cancels the stream), not only when the next event fails to send.
    """
    watcher = asyncio.create_task(cancel_on_disconnect(request, job))
    try:
        if opening is not None:
            yield sse(chunk(opening, None))
        async for piece in job.pieces():
            yield sse(chunk({"content": piece} if opening is not None else {"text": piece}, None))
        yield sse(chunk({} if opening is not None else {"text": ""}, job.finish_reason))
        if with_usage:
            yield sse({**chunk({}, None), "choices": [], "usage": job.usage})
        yield "data: [DONE]\n\n"
    except APIError as e:  # the engine failed mid-stream: OpenAI's clients raise on an error event
        yield sse(e.body())
        yield "data: [DONE]\n\n"
    finally:
        watcher.cancel()
        job.close()


def event_response(request: Request, job: Job, chunk: Callable[[dict[str, Any], str | None], dict[str, Any]],
                   opening: dict[str, Any] | None, with_usage: bool) -> StreamingResponse:
    """The streamed response of :func:`event_stream`. Its background task cancels the job too: a client
    that hangs up before the first event ends the response before the stream (and its ``finally``) begins."""
    return StreamingResponse(event_stream(request, job, chunk, opening, with_usage), media_type="text/event-stream",
                             headers=SSE_HEADERS, background=BackgroundTask(job.close))


# ------------------------------------------------------------------------------ the app
def create_app(model: torch.nn.Module, model_name: str, slots: int = 16) -> FastAPI:
    """The FastAPI app that serves ``model`` (tokenizer attached) under the id ``model_name``.

    ``slots`` requests are decoded together; more wait their turn. The engine thread starts and stops
    with the app (its lifespan), so run it with uvicorn (:func:`serve`, :func:`serve_in_background`).
    ``app.state.worker`` is the :class:`BatchWorker`.
    """
    if getattr(model, "tokenizer", None) is None:
        raise ValueError("model.tokenizer is None: attach the tokenizer the model was trained with "
                         "(checkpoints carry one: load_checkpoint)")
    if not isinstance(model_name, str) or not model_name.strip():
        raise ValueError(f"model_name must be a non-empty string (the id clients ask for), got {model_name!r}")
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise ValueError(f"slots must be an integer >= 1 (requests decoded together), got {slots!r}")
    model.eval()
    worker = BatchWorker(model, slots)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            worker.stop()

    app = FastAPI(title="MiniGPT", summary="an OpenAI-compatible server for a MiniGPT model", lifespan=lifespan)
    app.state.worker, app.state.model_name = worker, model_name
    add_error_handlers(app)
    add_routes(app, model, model_name, worker)
    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every error as OpenAI's JSON: refused requests (4xx), unknown URLs, and (no traceback) our own bugs."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError) -> JSONResponse:
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, e: RequestValidationError) -> JSONResponse:
        return validation_error(e.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = f"Invalid URL ({request.method} {request.url.path})" if e.status_code == 404 else str(e.detail)
        return APIError(e.status_code, message).response()

    @app.exception_handler(Exception)
    async def server_error(request: Request, e: Exception) -> JSONResponse:
        return APIError(500, f"internal server error: {type(e).__name__}", kind="server_error").response()


def add_routes(app: FastAPI, model: torch.nn.Module, model_name: str, worker: BatchWorker) -> None:
    """The chat page and the three OpenAI endpoints (see the module docstring)."""
    tok = model.tokenizer
    block_size = int(model.config.block_size)
    created = int(time.time())
    card = {"id": model_name, "object": "model", "created": created, "owned_by": "minigpt"}
    page = resources.files(__package__).joinpath("chat.html").read_text(encoding="utf-8")

    def check_model(name: str) -> None:
        if name != model_name:
            raise APIError(404, f"the model '{name}' does not exist: this server serves '{model_name}' "
                                "(GET /v1/models)", "model", "model_not_found")

    def head(kind: str, rid: str, when: int) -> dict[str, Any]:
        return {"id": rid, "object": kind, "created": when, "model": model_name}

    @app.get("/", response_class=HTMLResponse)
    async def chat_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/favicon.ico", include_in_schema=False)
    async def no_icon() -> Response:  # browsers ask for one with every page: no content, rather than a 404
        return Response(status_code=204)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str) -> dict[str, Any]:
        check_model(name)
        return card

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: Request) -> Any:
        check_model(body.model)
        ids = prompt_ids(tok, body.prompt)
        check_prompt_length(len(ids), block_size, "prompt")
        sampling = sampling_args(body, body.max_tokens, COMPLETIONS_MAX_TOKENS, block_size)
        job = Job(worker, tok, ids, [tok.eot_id], stop_strings(body.stop), sampling)
        rid, when = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(fields: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {**head("text_completion", rid, when),
                    "choices": [{"index": 0, **fields, "logprobs": None, "finish_reason": finish}]}

        if body.stream:
            return event_response(request, job, chunk, None, include_usage(body))
        text = await collect(request, job)
        return {**chunk({"text": text}, job.finish_reason), "usage": job.usage}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatBody, request: Request) -> Any:
        check_model(body.model)
        if not isinstance(tok, ChatTokenizer):
            raise APIError(400, NOT_A_CHAT_MODEL, "model")
        ids, _ = render_conversation(tok, chat_messages(body.messages), add_generation_prompt=True)
        check_prompt_length(len(ids), block_size, "messages")
        newer = body.max_completion_tokens is not None
        sampling = sampling_args(body, body.max_completion_tokens if newer else body.max_tokens, block_size,
                                 block_size, "max_completion_tokens" if newer else "max_tokens")
        job = Job(worker, tok, ids, tok.stop_ids, stop_strings(body.stop), sampling)
        rid, when = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(fields: dict[str, Any], finish: str | None) -> dict[str, Any]:
            key = "delta" if body.stream else "message"
            return {**head("chat.completion.chunk" if body.stream else "chat.completion", rid, when),
                    "choices": [{"index": 0, key: fields, "logprobs": None, "finish_reason": finish}]}

        if body.stream:
            return event_response(request, job, chunk, {"role": "assistant", "content": ""}, include_usage(body))
        text = await collect(request, job)
        return {**chunk({"role": "assistant", "content": text}, job.finish_reason), "usage": job.usage}


def include_usage(body: SamplingBody) -> bool:
    """OpenAI's ``stream_options: {"include_usage": true}``: a last chunk with the token counts."""
    return bool((body.stream_options or {}).get("include_usage"))


# ------------------------------------------------------------------------------ running it
def load_serving_model(path: str | Path, device: str | torch.device | None = None) -> torch.nn.Module:
    """The model a checkpoint (or training folder) holds, ready to serve: a chat model of ``sft()`` (LoRA
    adapters merged in) or a text continuer, which then serves ``/v1/completions`` only."""
    from ..finetune.chat import load_chat_model
    from ..finetune.lora import read_adapter_config
    from ..training.checkpoint import find_checkpoint, load_checkpoint

    ckpt = find_checkpoint(path) if Path(path).is_dir() else None
    if ckpt is not None and read_adapter_config(ckpt) is not None:
        return load_chat_model(ckpt, device=device)
    return load_checkpoint(path, device=device)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one); an OSError that names the fix if taken."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in [0, 65535] (0 = any free port), got {port!r}")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise OSError(f"cannot listen on {host!r}: {e.strerror or e}: use an address of this machine, "
                      "e.g. 127.0.0.1") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}: choose another port "
                      "(0 picks a free one)") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_config(app: FastAPI) -> uvicorn.Config:
    """Quiet uvicorn: warnings and errors only (the server says where it listens itself)."""
    return uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")


class _ReadyServer(uvicorn.Server):
    """A uvicorn server that sets :attr:`ready` once its startup has run (started or failed)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()


class RunningServer:
    """A server running in a background thread (:func:`serve_in_background`): :attr:`url`, :meth:`stop`.

    A context manager: ``with serve_in_background(app) as server: ...`` stops it on leaving.
    """

    def __init__(self, app: FastAPI, sock: socket.socket, timeout: float) -> None:
        self.app, self._sock = app, sock
        self.url = url_of(sock)
        self.port = int(sock.getsockname()[1])
        self._server = _ReadyServer(uvicorn_config(app))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="minigpt-server", daemon=True)
        self._thread.start()
        if not self._server.ready.wait(timeout) or not self._server.started:
            self.stop()
            raise RuntimeError(f"the server at {self.url} did not start within {timeout:g} s: see its log above")

    def stop(self, timeout: float = 30.0) -> None:
        """Shut down (finishing the requests in flight), then close the socket."""
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningServer({self.url})"


def serve_in_background(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0) -> RunningServer:
    """Run ``app`` with uvicorn in a background thread (a notebook, a test) and return once it answers.

    ``port=0`` picks a free port: read it from the result's ``url`` / ``port``.
    """
    return RunningServer(app, bind(host, port), timeout)


def serve(checkpoint_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, slots: int = 16,
          int8: bool = False, device: str | torch.device | None = None, model_name: str | None = None) -> None:
    """Serve a checkpoint until Ctrl-C (what ``python -m minigpt_helpers serve`` runs).

    ``int8`` quantizes the weights first (:func:`~minigpt_helpers.model.quantize.quantize_int8`). ``model_name`` is the id
    clients ask for (default: the folder's name). Prints one line saying where it listens; ``port=0``
    picks a free port, shown there. ``host="0.0.0.0"`` listens on every interface: anyone who can reach
    this machine can then use the model.
    """
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise ValueError(f"slots must be an integer >= 1 (requests decoded together), got {slots!r}")
    model = load_serving_model(checkpoint_dir, device=device)
    if int8 and getattr(model, "quantization", None) is None:  # a checkpoint saved int8 loads as int8 already
        from ..model.quantize import quantize_int8

        model = quantize_int8(model)
    name = model_name or default_model_name(checkpoint_dir)
    app = create_app(model, name, slots)
    sock = bind(host, port)
    try:
        server = uvicorn.Server(uvicorn_config(app))
        url = url_of(sock)
        print(f"[minigpt] serving {name!r} at {url}/ (chat page) and {url}/v1 (OpenAI API); Ctrl-C stops",
              flush=True)
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn shut down gracefully, then re-raised the Ctrl-C
            pass
    finally:
        sock.close()


def default_model_name(checkpoint_dir: str | Path) -> str:
    """The folder's name (``runs/sft`` -> ``sft``); a ``ckpt-*`` folder is named after its training folder."""
    from ..training.checkpoint import PREFIX

    path = Path(checkpoint_dir).resolve()
    return path.parent.name if path.name.startswith(PREFIX) and path.parent.name else path.name
