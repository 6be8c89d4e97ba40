"""The HTTP API (FastAPI on uvicorn): OpenAI-style completions (plain and server-sent events), models,
score, health, the page at / and its files, all served from this package (nothing fetched elsewhere)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from . import schemas as S
from .batch import Job, Settings, random_seed
from .engine import Busy, Engine, UsageError, Version, check_stops, log, score
from .errors import ApiError, Guard, error_response, validation_message
from .models import Registry

STATIC = Path(__file__).parent / "static"
MAX_SCORE_CHARS = 65536


@dataclass
class Limits:
    max_length: int = 2000       # characters per choice (max_tokens cap and default)
    max_prompt: int = 4000       # characters per prompt
    max_concurrency: int = 64    # streams sampled together
    max_queue: int = 256         # streams waiting for a place
    max_body: int = 1 << 20      # request body bytes
    default_length: int = 256


def create_app(registry: Registry, limits: Limits, api_key: str | None = None) -> FastAPI:
    def deliver(job: Job, index: int, text: str, finish: str | None) -> None:
        job.inbox.put_nowait((index, text, finish))

    engine = Engine(limits.max_concurrency, limits.max_queue, deliver)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        engine.start(asyncio.get_running_loop().call_soon_threadsafe)
        registry.start()
        yield
        registry.stop()
        await asyncio.get_running_loop().run_in_executor(None, engine.stop, 10.0)

    app = FastAPI(title="charrnn serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Character-level language models behind an OpenAI-compatible completions API "
                  "(a token is one character).")
    app.state.engine, app.state.registry, app.state.limits = engine, registry, limits
    _handlers(app)
    app.add_middleware(Guard, api_key=api_key, max_body=limits.max_body)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    _info_routes(app, registry, engine, api_key)
    _generation_routes(app, registry, engine, limits)
    return app


_ERRORS = {code: {"model": S.ErrorResponse} for code in (400, 401, 404, 413, 429, 503)}


def _info_routes(app: FastAPI, registry: Registry, engine: Engine, api_key: str | None) -> None:
    """The page, health and the model list."""
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", summary="Liveness, load, and whether an API key is needed")
    async def healthz():
        stats = engine.stats()
        body = {"status": "draining" if stats["draining"] else "ok", "models": list(registry.current),
                "auth": bool(api_key), "watch_switches": registry.switches, **stats}
        return JSONResponse(body, status_code=503 if stats["draining"] else 200)

    @app.get("/v1/models", response_model=S.ModelList, responses=_ERRORS)
    async def list_models():
        return S.ModelList(data=[_card(registry, v) for v in registry.current.values()])

    @app.get("/v1/models/{model_id}", response_model=S.ModelCard, responses=_ERRORS)
    async def get_model(model_id: str):
        return _card(registry, _version(registry, model_id))


def _generation_routes(app: FastAPI, registry: Registry, engine: Engine, limits: Limits) -> None:
    """Scoring and completions: the routes that run the models (on the engine's thread)."""
    @app.post("/v1/score", response_model=S.ScoreResponse, responses=_ERRORS)
    async def score_text(body: S.ScoreRequest):
        """Loss of a text (nats/char, as `charrnn eval`), optionally per character."""
        v = _version(registry, body.model)
        if len(body.text) > MAX_SCORE_CHARS:
            raise ApiError(400, f"text has {len(body.text):,} characters; at most {MAX_SCORE_CHARS:,}", "text")
        _known(v, body.text, "text")
        try:
            fut = engine.call(score, v, body.text, body.per_char)
        except Busy as e:
            raise _busy(e) from None
        return S.ScoreResponse(model=v.name, **await asyncio.wrap_future(fut))

    @app.post("/v1/completions", response_model=S.Completion, responses=_ERRORS | {
        200: {"content": {"text/event-stream": {"description": "with stream: chunks of this shape, then "
                                                "`data: [DONE]`"}}}})
    async def completions(body: S.CompletionRequest, request: Request):
        """Generate text continuing `prompt` (OpenAI's completions shape; a token is one character)."""
        job, prompts = _job(body, registry, limits)
        job.inbox = asyncio.Queue()
        try:
            engine.submit(job)
        except Busy as e:
            raise _busy(e) from None
        meta = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": job.version.name}
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_events(engine, job, meta, prompts, body.echo, usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await _complete(engine, job, meta, prompts, body.echo, request)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        route = request.scope.get("route")
        body_model = {"/v1/completions": S.CompletionRequest, "/v1/score": S.ScoreRequest}.get(
            getattr(route, "path", ""), S.CompletionRequest)
        message, param = validation_message(list(exc.errors()), list(body_model.model_fields))
        return error_response(400, message, param)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        messages = {404: f"no such endpoint: {request.method} {request.url.path} (see /openapi.json)",
                    405: f"{request.method} is not allowed on {request.url.path}"}
        return error_response(exc.status_code, messages.get(exc.status_code, str(exc.detail)),
                              code="not_found" if exc.status_code == 404 else None)

    @app.exception_handler(Exception)
    async def bug(request, exc: Exception):
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return error_response(500, "internal error (a bug in charrnn serve: see the server's log)",
                              type_="server_error")


def _card(registry: Registry, v: Version) -> S.ModelCard:
    s = v.model.shape
    created = int(v.path.stat().st_mtime) if v.path.exists() else 0
    val = v.val_loss if isinstance(v.val_loss, (int, float)) else None
    return S.ModelCard(id=v.name, created=created, cell=s.cell, num_layers=s.num_layers, hidden_size=s.hidden_size,
                       vocab_size=s.vocab_size, step=v.step, val_loss=val, watched=registry.watched(v.name))


def _version(registry: Registry, name: str | None) -> Version:
    v = registry.get(name)
    if v is None:
        raise ApiError(404, f"model {name!r} does not exist (this server has: {', '.join(registry.current)})",
                       "model", "model_not_found")
    return v


def _known(v: Version, text: str, param: str) -> None:
    bad = v.vocab.unknown_chars(text)
    if bad:
        shown = ", ".join(repr(c) for c in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise ApiError(400, f"{param} holds {len(bad)} character(s) model {v.name!r} does not know: {shown}",
                       param, "unknown_characters")


def _busy(e: Busy) -> ApiError:
    return ApiError(e.status, str(e), code="queue_full" if e.status == 429 else "shutting_down",
                    type_="server_busy", headers={"Retry-After": str(e.retry_after)})


def _job(body: S.CompletionRequest, registry: Registry, limits: Limits) -> tuple[Job, list[str]]:
    """The request's checks that need the model or the server's limits, then its Job."""
    v = _version(registry, body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts:
        raise ApiError(400, "prompt is an empty list", "prompt")
    for p in prompts:
        if len(p) > limits.max_prompt:
            raise ApiError(400, f"the prompt has {len(p):,} characters; this server takes at most "
                           f"{limits.max_prompt:,}", "prompt", "prompt_too_long")
        _known(v, p, "prompt")
    length = body.max_tokens if body.max_tokens is not None else min(limits.default_length, limits.max_length)
    if length > limits.max_length:
        raise ApiError(400, f"max_tokens is {length:,}; this server generates at most {limits.max_length:,} "
                       "characters per choice", "max_tokens")
    streams = body.n * len(prompts)
    if streams > limits.max_concurrency:
        raise ApiError(400, f"n x prompts = {streams} streams; this server runs at most {limits.max_concurrency} "
                       "at once", "n")
    stops = _stops(body.stop)
    seed = body.seed if body.seed is not None else random_seed()
    top_k = body.top_k if body.top_k < v.vocab.size else 0  # all characters (and no int64 overflow)
    settings = Settings(body.temperature, top_k, body.top_p)
    ids = [v.vocab.encode(p) for p in prompts]
    return Job(v, ids, body.n, seed, settings, length, stops), prompts


def _stops(stop) -> tuple[str, ...]:
    try:
        stops = check_stops(stop)
    except UsageError as e:
        raise ApiError(400, e.message, "stop") from None
    if len(stops) > 4 or any(len(s) > 64 for s in stops):
        raise ApiError(400, "stop takes at most 4 strings of at most 64 characters each", "stop")
    return stops


def _usage(prompts: list[str], texts: list[str]) -> dict:
    p, c = sum(len(x) for x in prompts), sum(len(x) for x in texts)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def _complete(engine: Engine, job: Job, meta: dict, prompts: list[str], echo: bool, request: Request):
    """Wait for every choice, or for the client to leave (then its streams stop at once)."""
    texts = [[] for _ in job.streams]
    finish: list[str | None] = [None] * len(job.streams)
    left = asyncio.ensure_future(_disconnected(request))
    try:
        while None in finish:
            get = asyncio.ensure_future(job.inbox.get())
            await asyncio.wait({get, left}, return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                return JSONResponse({}, status_code=499)  # nobody is there to read it
            index, text, reason = get.result()
            if reason == "error":
                return error_response(500, "generation failed (a bug in charrnn serve: see the server's log)",
                                      type_="server_error")
            texts[index].append(text)
            finish[index] = reason
    finally:
        left.cancel()
        if None in finish:
            engine.cancel(job)
    out = ["".join(t) for t in texts]
    choices = [{"text": (prompts[i // job.n] if echo else "") + t, "index": i, "logprobs": None,
                "finish_reason": finish[i]} for i, t in enumerate(out)]
    return {**meta, "object": "text_completion", "choices": choices, "usage": _usage(prompts, out), "seed": job.seed}


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _events(engine: Engine, job: Job, meta: dict, prompts: list[str], echo: bool, usage: bool):
    """Server-sent events: one chunk per piece of text (several pieces that arrived together in one
    write), a chunk with finish_reason per choice, an optional usage chunk, then `data: [DONE]`."""
    def chunk(index: int, text: str, reason: str | None) -> str:
        c = {**meta, "object": "text_completion", "seed": job.seed,
             "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": reason}]}
        return f"data: {json.dumps(c, ensure_ascii=False)}\n\n"

    open_ = len(job.streams)
    made = [0] * open_
    try:
        if echo:
            yield "".join(chunk(i, prompts[i // job.n], None) for i in range(open_))
        while open_:
            events = [await job.inbox.get()]
            while not job.inbox.empty():
                events.append(job.inbox.get_nowait())
            out = []
            for index, text, reason in events:
                if reason == "error":
                    err = {"error": {"message": "generation failed (a bug in charrnn serve: see the server's log)",
                                     "type": "server_error", "param": None, "code": None}}
                    yield "".join(out) + f"data: {json.dumps(err)}\n\n"
                    return
                made[index] += len(text)
                open_ -= reason is not None
                out.append(chunk(index, text, reason))
            yield "".join(out)
        if usage:
            p = sum(len(x) for x in prompts)
            c = {**meta, "object": "text_completion", "seed": job.seed, "choices": [],
                 "usage": {"prompt_tokens": p, "completion_tokens": sum(made), "total_tokens": p + sum(made)}}
            yield f"data: {json.dumps(c)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        if open_:
            engine.cancel(job)  # the client left (or the server is cutting the stream): stop sampling it
