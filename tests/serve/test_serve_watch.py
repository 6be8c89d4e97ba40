"""`charrnn serve --watch RUN` switching to a new best.npz under load without dropping a request in flight,
and `charrnn serve` in a terminal: its startup lines, and Ctrl-C ending it cleanly."""
import json
import os
import shutil
import threading

import httpx
from support.pty import Terminal
from support.serve import Server, write_checkpoint
from test_serve import cli_samples, complete


def test_watch_switches_under_load_without_dropping_requests(tmp_path, cli):
    a = write_checkpoint(tmp_path / "a.npz", seed=0, step=100)
    b = write_checkpoint(tmp_path / "b.npz", seed=1, step=200)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(a, run / "best.npz")
    with Server("--watch", run, slow=(0.02, 2)) as s:  # about 100 characters a second per stream
        results, started, errors = {}, threading.Semaphore(0), []

        def reader(seed):
            try:
                events = []
                with httpx.stream("POST", f"{s.url}/v1/completions", timeout=60,
                                  json={"prompt": "the ", "max_tokens": 400, "seed": seed, "stream": True}) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            if not events:
                                started.release()
                            events.append(line[6:])
                assert events[-1] == "[DONE]"
                results[seed] = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
            except Exception as e:  # noqa: BLE001  reported below
                errors.append(repr(e))
                started.release()
        threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(1, 5)]
        for t in threads:
            t.start()
        for _ in threads:
            assert started.acquire(timeout=60)
        assert httpx.get(f"{s.url}/v1/models/run").json()["step"] == 100
        tmp = run / "best.npz.tmp"
        shutil.copy(b, tmp)
        os.replace(tmp, run / "best.npz")  # as charrnn train publishes a new best
        s.wait_for(r"model 'run' now serves .* step 200", timeout=30)
        assert httpx.get(f"{s.url}/v1/models/run").json()["step"] == 200
        assert any(t.is_alive() for t in threads)  # the switch happened with requests in flight
        after = complete(s.url, prompt="the ", max_tokens=50, seed=1)["choices"][0]["text"]
        for t in threads:
            t.join(60)
        assert not errors
        for seed in range(1, 5):  # begun on the old weights, finished on them
            assert results[seed] == cli_samples(cli, a, "the ", seed, 1, 400)[0]
        assert after == cli_samples(cli, b, "the ", 1, 1, 50)[0]
        assert httpx.get(f"{s.url}/healthz").json()["watch_switches"] == 1


def test_serve_in_a_terminal_starts_and_ctrl_c_stops_it(tmp_path):
    ckpt = write_checkpoint(tmp_path / "tiny" / "best.npz")
    with Terminal(["serve", str(ckpt.parent), "--port", "0"], cwd=tmp_path) as t:
        m = t.expect(r"listening on (http://127\.0\.0\.1:\d+)")
        assert "model 'tiny'" in t.text and "LSTM 1x24" in t.text and "Ctrl-C stops" in t.text
        url = m.group(1)
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        t.send("\x03")
        t.expect("stopped")
        assert t.wait() == 0
        assert "Traceback" not in t.text and "Error" not in t.text
