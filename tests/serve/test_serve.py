"""`charrnn serve` over real sockets: a uvicorn subprocess on 127.0.0.1, spoken to with httpx and with the
official openai client. The text equals `charrnn sample`'s for the same prime, seed and -N, alone and
under load; bad requests are 4xx in OpenAI's error shape, never 500."""
import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from support.serve import Server, write_checkpoint

PRIME = "the quick "


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("serve") / "tiny" / "best.npz")


@pytest.fixture(scope="module")
def server(ckpt):
    with Server(ckpt.parent, "--max-length", 500, "--max-prompt", 100, "--max-concurrency", 16) as s:
        yield s


def cli_samples(cli, ckpt, prime, seed, n, length, *extra) -> list[str]:
    r = cli("sample", ckpt, "--prime", prime, "--seed", seed, "-N", n, "--length", length, "--no-echo", *extra)
    assert r.exit_code == 0, r.output
    if n == 1:
        return [r.stdout[:-1]]
    parts = r.stdout.split("--- sample ")[1:]
    return [p.split(" ---\n", 1)[1][:-1] for p in parts]


def complete(url, **body) -> dict:
    r = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def stream_events(url, **body) -> list:
    """The data fields of every server-sent event, '[DONE]' as a string, the rest parsed."""
    out = []
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_models_health_openapi(server):
    models = httpx.get(f"{server.url}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["tiny"] and models["data"][0]["hidden_size"] == 24
    assert httpx.get(f"{server.url}/v1/models/tiny").json()["cell"] == "lstm"
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["status"] == "ok" and health["models"] == ["tiny"]
    doc = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/completions", "/v1/models", "/v1/score"} <= set(doc["paths"])
    assert "CompletionRequest" in doc["components"]["schemas"]


def test_text_equals_charrnn_sample_alone_and_under_load(server, ckpt, cli):
    want = cli_samples(cli, ckpt, PRIME, 11, 3, 200)
    alone = complete(server.url, prompt=PRIME, seed=11, n=3, max_tokens=200)
    assert [c["text"] for c in alone["choices"]] == want
    assert alone["usage"] == {"prompt_tokens": len(PRIME), "completion_tokens": 600, "total_tokens": 610}
    results, errors = {}, []

    def one(i):  # other requests of every kind around the same one, several times over
        try:
            body = {"prompt": PRIME, "seed": 11, "n": 3, "max_tokens": 200} if i % 3 == 0 else \
                {"prompt": "a stitch "[: i % 9], "seed": i, "max_tokens": 50 + 17 * i, "temperature": 0.5 + i / 20}
            results[i] = [c["text"] for c in complete(server.url, **body)["choices"]]
        except Exception as e:  # noqa: BLE001  reported below
            errors.append(repr(e))
    threads = [threading.Thread(target=one, args=(i,)) for i in range(15)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(results[i] == want for i in range(0, 15, 3))


def test_stream_sse_matches_plain_and_ends_with_done(server):
    plain = complete(server.url, prompt=PRIME, seed=5, n=2, max_tokens=120, top_k=5, top_p=0.9)
    events = stream_events(server.url, prompt=PRIME, seed=5, n=2, max_tokens=120, top_k=5, top_p=0.9,
                           stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    assert events[-2]["usage"]["completion_tokens"] == 240 and events[-2]["choices"] == []
    texts, finish = ["", ""], [None, None]
    for e in events[:-2]:
        for c in e["choices"]:
            texts[c["index"]] += c["text"]
            finish[c["index"]] = c["finish_reason"] or finish[c["index"]]
    assert len(events) > 3  # it came in pieces
    assert texts == [c["text"] for c in plain["choices"]] and finish == ["length", "length"]


def test_stop_strings_greedy_echo_and_score(server, ckpt, cli):
    full = complete(server.url, prompt=PRIME, seed=3, max_tokens=300)["choices"][0]["text"]
    stop = full[40:42]
    cut = complete(server.url, prompt=PRIME, seed=3, max_tokens=300, stop=[stop, "@@"])["choices"][0]
    assert cut["finish_reason"] == "stop" and cut["text"] == full[:full.index(stop)]
    assert cut["text"] == cli_samples(cli, ckpt, PRIME, 3, 1, 300, "--stop", stop)[0]
    huge = complete(server.url, prompt=PRIME, seed=3, max_tokens=300, top_k=10**30)["choices"][0]["text"]
    assert huge == full  # top_k beyond the vocabulary: every character
    greedy = complete(server.url, prompt=PRIME, temperature=0, n=2, max_tokens=30, echo=True)["choices"]
    assert greedy[0]["text"] == greedy[1]["text"] == PRIME + cli_samples(cli, ckpt, PRIME, 0, 1, 30, "--argmax")[0]
    text = "the rain in spain stays mainly in the plain.\n"
    r = httpx.post(f"{server.url}/v1/score", json={"text": text, "per_char": True}, timeout=120).json()  # loads kernels
    ev = json.loads(cli("eval", ckpt, _write(ckpt.parent / "t.txt", text), "--json").stdout)
    assert r["loss"] == pytest.approx(ev["loss"], rel=1e-6) and r["predictions"] == len(text) - 1
    assert sum(c["loss"] for c in r["per_char"]) / len(r["per_char"]) == pytest.approx(ev["loss"], rel=1e-4)


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


BAD = [  # (raw body or JSON, content type, status, param, words in the message)
    ("{bad", "application/json", 400, None, "not valid JSON"),
    ("[1, 2]", "application/json", 400, None, "must be a JSON object"),
    ('{"prompt": "a"}', "application/x-www-form-urlencoded", 400, None, "Content-Type: application/json"),
    ({"max_tokens": "5"}, None, 400, "max_tokens", "valid integer"),
    ({"n": 2.0}, None, 400, "n", "valid integer"),
    ({"n": 0}, None, 400, "n", "greater than or equal to 1"),
    ({"n": 17}, None, 400, "n", "at most 16"),
    ({"temperature": -1}, None, 400, "temperature", "greater than or equal to 0"),
    ({"temperature": "hot"}, None, 400, "temperature", "valid number"),
    ({"top_p": 0}, None, 400, "top_p", "greater than 0"),
    ({"top_k": -2}, None, 400, "top_k", "greater than or equal to 0"),
    ({"stream": "yes"}, None, 400, "stream", "valid boolean"),
    ({"seed": 2**70}, None, 400, "seed", "less than or equal"),
    ({"prompt": 5}, None, 400, "prompt", "string or a list of strings"),
    ({"prompt": []}, None, 400, "prompt", "empty list"),
    ({"prompt": "x" * 101}, None, 400, "prompt", "at most 100"),
    ({"prompt": "Q\u20ac"}, None, 400, "prompt", "'Q', '\u20ac'"),
    ({"max_tokens": 501}, None, 400, "max_tokens", "at most 500"),
    ({"stop": ""}, None, 400, "stop", "empty"),
    ({"stop": ["a", "b", "c", "d", "e"]}, None, 400, "stop", "at most 4"),
    ({"model": "../../etc/passwd"}, None, 404, "model", "does not exist"),
    ({"logprobs": 5}, None, 400, "logprobs", ""),
    ({"bogus": 1}, None, 400, "bogus", "unknown field"),
]


@pytest.mark.parametrize(("body", "ctype", "status", "param", "words"), BAD, ids=[str(b[0])[:30] for b in BAD])
def test_bad_requests_are_4xx_in_openai_shape(server, body, ctype, status, param, words):
    if isinstance(body, str):
        r = httpx.post(f"{server.url}/v1/completions", content=body.encode(), headers={"content-type": ctype})
    else:
        r = httpx.post(f"{server.url}/v1/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param
    assert words in err["message"]


def test_other_bad_requests(server):
    r = httpx.post(f"{server.url}/v1/completions", content=b"{" + b" " * (2 << 20) + b"}",
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over" in r.json()["error"]["message"]
    assert httpx.get(f"{server.url}/v1/completions").status_code == 405
    assert httpx.get(f"{server.url}/v1/files").json()["error"]["code"] == "not_found"
    r = httpx.post(f"{server.url}/v1/score", json={"text": "a"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "text"
    r = httpx.post(f"{server.url}/v1/score", json={"text": "QQ"})
    assert r.status_code == 400 and "'Q'" in r.json()["error"]["message"]
    assert "Traceback" not in server.log


def test_openai_client_plain_and_streaming(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny"]
    r = client.completions.create(model="tiny", prompt=PRIME, max_tokens=80, seed=9, temperature=0.8)
    assert len(r.choices[0].text) == 80 and r.usage.completion_tokens == 80
    pieces = [c.choices[0].text for c in client.completions.create(model="tiny", prompt=PRIME, max_tokens=80,
                                                                   seed=9, temperature=0.8, stream=True)]
    assert "".join(pieces) == r.choices[0].text and len(pieces) > 1
    with pytest.raises(openai.BadRequestError, match="does not know"):
        client.completions.create(model="tiny", prompt="\u00e9", max_tokens=5)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="a", max_tokens=5)


CLIENT = """
import httpx, sys
with httpx.stream("POST", sys.argv[1] + "/v1/completions", timeout=60,
                  json={"prompt": "a", "max_tokens": 500, "n": 4, "stream": True}) as r:
    for line in r.iter_lines():
        if line.startswith("data: "):
            print("got", flush=True)
            sys.stdin.read()  # hold the connection open, reading nothing, until killed
"""


def test_killed_client_stops_its_streams_and_a_full_queue_is_429(ckpt):
    with Server(ckpt, "--max-concurrency", 4, "--max-queue", 0, slow=(0.05, 1)) as s:
        client = subprocess.Popen([sys.executable, "-c", CLIENT, s.url], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert client.stdout.readline() == "got\n"
        assert httpx.get(f"{s.url}/healthz").json()["running_streams"] == 4
        r = httpx.post(f"{s.url}/v1/completions", json={"prompt": "a", "max_tokens": 5})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "queue_full"
        client.kill()
        client.wait()
        deadline = time.monotonic() + 10
        while httpx.get(f"{s.url}/healthz").json()["running_streams"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{s.url}/healthz").json()["running_streams"] == 0  # 500 characters x 4 would take 25 s
        assert complete(s.url, prompt="a", max_tokens=3, seed=1)["choices"][0]["finish_reason"] == "length"


def test_api_key_and_startup_lines(ckpt):
    with Server(ckpt, "--name", "m", "--host", "127.0.0.1", env={"CHARRNN_API_KEY": "s3cret"}) as s:
        r = httpx.post(f"{s.url}/v1/completions", json={"prompt": "a"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = httpx.get(f"{s.url}/v1/models", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and "wrong API key" in r.json()["error"]["message"]
        ok = httpx.get(f"{s.url}/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["data"][0]["id"] == "m"
        assert httpx.get(f"{s.url}/healthz").json()["auth"] is True
        assert httpx.get(f"{s.url}/").status_code == 200  # the page asks for the key itself
        assert "model 'm'" in s.log and "API key required" in s.log and "warning" not in s.log


def test_drain_on_sigterm_finishes_in_flight_and_refuses_new(ckpt):
    with Server(ckpt, slow=(0.05, 1)) as s:
        events, done = [], threading.Event()

        def reader():
            with httpx.stream("POST", f"{s.url}/v1/completions", timeout=60,
                              json={"prompt": "a", "max_tokens": 40, "seed": 2, "stream": True}) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(line[6:])
            done.set()
        threading.Thread(target=reader, daemon=True).start()
        while not events:
            time.sleep(0.02)
        s.signal(signal.SIGTERM)
        s.wait_for("stopping: 1 stream")
        try:  # refused: 503 while uvicorn is closing its socket (a tick of its loop), then no connection
            r = httpx.post(f"{s.url}/v1/completions", json={"prompt": "a", "max_tokens": 5})
            assert r.status_code == 503 and r.headers["retry-after"] and r.json()["error"]["code"] == "shutting_down"
        except httpx.TransportError:
            pass
        assert done.wait(30) and events[-1] == "[DONE]"
        text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
        assert len(text) == 40
        assert s.proc.wait(30) == 0 and "stopped" in s.log and "Traceback" not in s.log


def test_drain_is_bounded(ckpt):
    with Server(ckpt, "--drain-timeout", 1, slow=(0.05, 1)) as s:
        got = threading.Event()

        def reader():
            try:
                with httpx.stream("POST", f"{s.url}/v1/completions", timeout=60,
                                  json={"prompt": "a", "max_tokens": 2000, "stream": True}) as r:
                    for _ in r.iter_lines():
                        got.set()
            except httpx.HTTPError:
                pass
        threading.Thread(target=reader, daemon=True).start()
        assert got.wait(30)
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        assert s.proc.wait(30) == 0
        assert time.monotonic() - t0 < 10  # 2,000 characters at 20/s would take 100 s


def test_bad_command_lines_are_one_line(ckpt, tmp_path, cli, server):
    from support.runs import one_line_error
    taken = server.url.rsplit(":", 1)[1]
    assert "cannot listen on 127.0.0.1:" + taken in one_line_error(cli("serve", ckpt, "--port", taken))
    assert "must be >= 1" in one_line_error(cli("serve", ckpt, "--max-concurrency", 0))
    # a host other than loopback without a key is warned about (the port is taken: nothing listens on it)
    r = cli("serve", ckpt, "--host", "0.0.0.0", "--port", taken)
    assert r.exit_code == 2 and "warning: --host 0.0.0.0 lets other machines in" in r.stderr
    assert "does not exist" in one_line_error(cli("serve", tmp_path / "nope.npz"))
    assert "no model to serve" in one_line_error(cli("serve"))
    assert "two models are named" in one_line_error(cli("serve", ckpt, ckpt))
    assert "not allowed" in one_line_error(cli("serve", ckpt, "--name", "a b"))
    assert "not a run directory" in one_line_error(cli("serve", "--watch", ckpt))


def test_help_imports_no_server_or_kernels():
    code = "import sys; from charrnn.cli import main; print(sorted(m for m in ('numba', 'fastapi', 'starlette', " \
           "'uvicorn', 'charrnn.serve.app') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_without_the_extra_says_what_to_install(ckpt, cli, monkeypatch):
    from support.runs import one_line_error
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi -> ImportError
    assert "pip install 'charrnn[serve]'" in one_line_error(cli("serve", ckpt))
