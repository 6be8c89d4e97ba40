"""Load benchmark of `charrnn serve`: C concurrent streaming clients for a fixed time, for each C.

Starts the server itself on 127.0.0.1 (a free port; loopback only), runs each client count for
--duration seconds after a --warmup, and stops by itself (every wait is bounded; the server is sent
SIGTERM, then killed). Each client loops: POST /v1/completions with stream=true, read the events to the
end, start again (one keep-alive connection per client over raw asyncio streams, the lean default;
--client httpx for a typical Python client). The primes come from a short list, so the server feeds
each once and then reuses its state; --distinct-primes makes every prime new. Reported per client
count: total generated characters per second (characters received inside the window), time to first
character (request sent -> first text event) p50/p99, requests finished, errors (any non-200, broken
stream or missing [DONE]), the server's RSS (VmRSS) at the start and the end of the window, and the CPU
(cores busy on average) of the server (and of its main thread, uvicorn's event loop, alone) and of this
load generator over the window. --soak S adds one long run at --soak-clients clients, sampling RSS.

The load generator runs on the same machine (one asyncio process): its CPU is taken from the
server's. Say so when quoting numbers, with `uptime` before and after (other work on the machine).

    python benchmarks/serve_load.py CHECKPOINT [--clients 1,8,32,128] [--duration 20] [--soak 600]
    python benchmarks/serve_load.py --random-lstm 2x256   # random weights: throughput only
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import GATES, cpu_model, forward_flops_per_char  # noqa: E402

PRIMES = ["ROMEO:\n", "First Citizen:\nBefore we proceed", "KING RICHARD III:\n", "The ", "O, ", "\n"]


def random_checkpoint(spec: str, corpus: Path, out: Path) -> Path:
    """A 'LxH' LSTM with random weights over the corpus's characters (throughput does not need quality)."""
    from charrnn.checkpoints import meta, store
    from charrnn.checkpoints import npz as checkpoint
    from charrnn.data.vocab import Vocab
    from charrnn.engine.model import Model
    from charrnn.engine.params import Params, Shape, init_params
    L, H = (int(x) for x in spec.lower().split("x"))
    vocab = Vocab("".join(sorted(set(corpus.read_text(encoding="utf-8")))))
    shape = Shape("lstm", vocab.size, H, L, 0)
    p = Params(shape)
    init_params(p, np.random.default_rng(0))
    checkpoint.save(out, store.model_arrays(Model(shape, p)), {"model": meta.shape_meta(shape), "vocab": vocab.chars})
    return out


def _cpu_s(stat: str) -> float:
    with open(stat) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    def __init__(self, ckpt: str, extra: list[str]):
        cmd = [sys.executable, "-m", "charrnn", "serve", ckpt, "--host", "127.0.0.1", "--port", "0", *extra]
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.log.seek(0)
            m = re.search(r"listening on (http://\S+?)\s", self.log.read())
            if m:
                self.url = m.group(1)
                return
            time.sleep(0.2)
        self.stop()
        self.log.seek(0)
        raise SystemExit(f"the server did not start:\n{self.log.read()}")

    def cpu_s(self) -> tuple[float, float]:
        """The server's CPU seconds so far (user + system): (every thread, its main thread alone). The main
        thread runs uvicorn's event loop (HTTP, JSON, server-sent events); the others are the sampling
        engine's thread and the sampler's pool threads."""
        return _cpu_s(f"/proc/{self.proc.pid}/stat"), _cpu_s(f"/proc/{self.proc.pid}/task/{self.proc.pid}/stat")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


DISTINCT = False  # --distinct-primes: every request's prime is new to the server (no kept prime state)


def _body(cid: int, i: int, max_tokens: int) -> dict:
    prompt = PRIMES[(cid + i) % len(PRIMES)]
    if DISTINCT:  # the client and request numbers spelt in letters after the prime
        prompt += " " + "".join("z" if ch == "x" else chr(97 + int(ch)) for ch in f"{cid}x{i}")
    return {"prompt": prompt, "max_tokens": max_tokens, "seed": cid * 100003 + i, "temperature": 1.0,
            "stream": True}


def _count(stats: dict, key: str) -> None:
    stats["errors"] += 1
    stats["error_kinds"][key] = stats["error_kinds"].get(key, 0) + 1


def _event(stats: dict, data, sent: float, first: float | None, t_start: float, t_end: float):
    """Count one event's characters (and the request's first-character time): (first, window closed)."""
    now = time.perf_counter()
    n = sum(len(c["text"]) for c in json.loads(data)["choices"])
    if first is None and n:
        first = now
        if sent >= t_start:
            stats["ttfc"].append(now - sent)
    if t_start <= now <= t_end:
        stats["chars"] += n
    return first, now > t_end


def _ended(stats: dict, done: bool, t_end: float) -> None:
    if not done:
        _count(stats, "no [DONE]")
    elif time.perf_counter() <= t_end:
        stats["requests"] += 1


class RawClient:
    """One keep-alive HTTP/1.1 connection spoken over raw asyncio streams, reading server-sent events with
    the least parsing that counts characters (json.loads of each data line, in C): the lean load generator
    (httpx's Python layers cost ~0.4 of the 2 cores at 32 clients, taken from the server)."""

    def __init__(self, url: str):
        self.host, self.port = url.split("//", 1)[1].rsplit(":", 1)
        self.reader = self.writer = None

    async def post(self, body: dict):
        """Send the request; yield the data of each event (str) as it arrives; raise OSError on a broken
        connection and ValueError(status) on a non-200."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, int(self.port))
        raw = json.dumps(body).encode()
        self.writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (self.host.encode(), len(raw), raw))
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        status = int(head.split(None, 2)[1])
        if "transfer-encoding: chunked" not in head:
            n = int(re.search(r"content-length: *(\d+)", head).group(1))
            await self.reader.readexactly(n)
            raise ValueError(str(status))
        if status != 200:
            raise ValueError(str(status))
        pending = b""
        while True:
            size = int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            data = await self.reader.readexactly(size + 2)
            if not size:
                return
            pending += data[:-2]
            *events, pending = pending.split(b"\n\n")
            for e in events:
                if e.startswith(b"data: "):
                    yield e[6:]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def raw_client(url: str, cid: int, stats: dict, t_start: float, t_end: float, max_tokens: int) -> None:
    conn, i = RawClient(url), 0
    try:
        while time.perf_counter() < t_end:
            sent, first, done = time.perf_counter(), None, False
            i += 1
            try:
                async for data in conn.post(_body(cid, i - 1, max_tokens)):
                    if data == b"[DONE]":
                        done = True
                        continue
                    first, closed = _event(stats, data, sent, first, t_start, t_end)
                    if closed:
                        return  # the window closed: leave (the server sees a disconnect)
            except ValueError as e:  # a non-200 status
                _count(stats, str(e))
                conn.close()
                continue
            except (OSError, asyncio.IncompleteReadError) as e:
                _count(stats, type(e).__name__)
                conn.close()
                continue
            _ended(stats, done, t_end)
    finally:
        conn.close()


async def client(http: httpx.AsyncClient, url: str, cid: int, stats: dict, t_start: float, t_end: float,
                 max_tokens: int) -> None:
    """The same loop over httpx (--client httpx): what a typical Python client costs."""
    i = 0
    while time.perf_counter() < t_end:
        body = _body(cid, i, max_tokens)
        i += 1
        sent = time.perf_counter()
        first, done = None, False
        try:
            async with http.stream("POST", f"{url}/v1/completions", json=body) as r:
                if r.status_code != 200:
                    _count(stats, str(r.status_code))
                    await r.aread()
                    continue
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        done = True
                        break
                    first, closed = _event(stats, line[6:], sent, first, t_start, t_end)
                    if closed:
                        return  # the window closed: leave (the server sees a disconnect)
        except (httpx.HTTPError, asyncio.TimeoutError) as e:
            _count(stats, type(e).__name__)
            continue
        _ended(stats, done, t_end)


async def level(server: ServerProcess, clients: int, warmup: float, duration: float, max_tokens: int,
                rss_every: float = 0.0, kind: str = "raw") -> dict:
    stats = {"chars": 0, "ttfc": [], "requests": 0, "errors": 0, "error_kinds": {}, "rss": []}
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits) as http:
        t0 = time.perf_counter()
        t_start, t_end = t0 + warmup, t0 + warmup + duration
        if kind == "raw":
            tasks = [asyncio.create_task(raw_client(server.url, c, stats, t_start, t_end, max_tokens))
                     for c in range(clients)]
        else:
            tasks = [asyncio.create_task(client(http, server.url, c, stats, t_start, t_end, max_tokens))
                     for c in range(clients)]
        await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
        rss0 = server.rss_mb()
        cpu0, mine0 = server.cpu_s(), sum(os.times()[:2])
        while rss_every and time.perf_counter() < t_end:
            stats["rss"].append((round(time.perf_counter() - t_start, 1), round(server.rss_mb(), 1)))
            await asyncio.sleep(min(rss_every, max(0.0, t_end - time.perf_counter())))
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        # CPU over the window: where the 2 cores went (the server's sampler and HTTP, this load generator)
        cpu1 = server.cpu_s()
        cpu = (cpu1[0] - cpu0[0], sum(os.times()[:2]) - mine0, cpu1[1] - cpu0[1])
        await asyncio.wait(tasks, timeout=duration + warmup + 90)
        for t in tasks:
            t.cancel()
    ttfc = np.array(stats["ttfc"]) * 1000
    return {"clients": clients, "seconds": duration, "chars_per_s": stats["chars"] / duration,
            "ttfc_p50_ms": float(np.percentile(ttfc, 50)) if ttfc.size else None,
            "ttfc_p99_ms": float(np.percentile(ttfc, 99)) if ttfc.size else None,
            "first_chars": int(ttfc.size), "requests": stats["requests"], "errors": stats["errors"],
            "error_kinds": stats["error_kinds"], "rss_start_mb": round(rss0, 1), "rss_end_mb": round(server.rss_mb(), 1),
            "rss_series": stats["rss"], "server_cpu_per_s": round(cpu[0] / duration, 2),
            "client_cpu_per_s": round(cpu[1] / duration, 2), "event_loop_cpu_per_s": round(cpu[2] / duration, 2),
            "client": kind}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", nargs="?", help="checkpoint or run directory to serve")
    ap.add_argument("--random-lstm", metavar="LxH", help="serve an LSTM with random weights instead, e.g. 2x256")
    ap.add_argument("--corpus", default="corpora/tinyshakespeare.txt", help="vocabulary for --random-lstm")
    ap.add_argument("--clients", default="1,8,32,128")
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds per client count")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--max-tokens", type=int, default=300, help="characters per request")
    ap.add_argument("--soak", type=float, default=0.0, help="then this many seconds at --soak-clients")
    ap.add_argument("--soak-clients", type=int, default=32)
    ap.add_argument("--server-args", default="--max-concurrency 128 --max-queue 512",
                    help="extra charrnn serve options")
    ap.add_argument("--client", choices=("raw", "httpx"), default="raw",
                    help="load generator: raw asyncio streams (lean) or httpx (a typical Python client)")
    ap.add_argument("--distinct-primes", action="store_true",
                    help="make every request's prime new to the server (it keeps the state after a prime seen before)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    a = ap.parse_args()
    global DISTINCT
    DISTINCT = a.distinct_primes
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = a.checkpoint
        if a.random_lstm:
            ckpt = str(random_checkpoint(a.random_lstm, Path(a.corpus), Path(tmp) / "random.npz"))
        if not ckpt:
            ap.error("give a CHECKPOINT or --random-lstm LxH")
        server = ServerProcess(ckpt, a.server_args.split())
        results = []
        try:
            for c in (int(x) for x in a.clients.split(",")):
                r = asyncio.run(level(server, c, a.warmup, a.duration, a.max_tokens, kind=a.client))
                results.append(r)
                print(_row(r), flush=True)
            if a.soak:
                r = asyncio.run(level(server, a.soak_clients, a.warmup, a.soak, a.max_tokens, rss_every=10.0,
                                      kind=a.client))
                r["soak"] = True
                results.append(r)
                print(_row(r) + "  (soak)", flush=True)
                print("soak RSS MB over time (s, MB): " + " ".join(f"{t:g}:{m:g}" for t, m in r["rss_series"]))
        finally:
            server.stop()
        one = next((r["chars_per_s"] for r in results if r["clients"] == 1 and not r.get("soak")), None)
        if one:
            for r in results:
                print(f"{r['clients']:>4} clients: {r['chars_per_s'] / one:5.1f}x one client's chars/s")
        ceiling = arithmetic_ceiling(ckpt)
        print(ceiling["text"] + (f" = {ceiling['chars_per_s'] / one:.1f}x one client's chars/s" if one else ""))
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "ceiling": ceiling, "cpu": cpu_model(),
                                            "cores": os.cpu_count()}, indent=1))


def arithmetic_ceiling(ckpt: str) -> dict:
    """The most characters per second any server could generate with this model on this machine's cores,
    from two measured inputs and no assumption about the server: the multiply-adds one character costs
    (_common's forward count without layer 0's input product: the sampler reads a table row there) and
    charrnn's single-threaded sgemm rate at 2048^3 (bench.py's measurement, the best case for the FMA
    units) times the usable cores. Gate arithmetic, softmax and drawing, HTTP and JSON all come on top, so
    a real server stays below it."""
    from bench import charrnn_blas_rate

    from charrnn.serve.engine import load_version
    s = load_version("m", ckpt).model.shape
    macs = forward_flops_per_char(s.cell, s.vocab_size, s.hidden_size, s.num_layers) // 2 \
        - s.vocab_size * GATES[s.cell] * s.hidden_size
    cores = len(os.sched_getaffinity(0))
    flops = charrnn_blas_rate(2048, 2048, 2048, 5) * 1e9 * cores
    cps = flops / (2 * macs)
    return {"macs_per_char": int(macs), "sgemm_gflops": flops / 1e9, "cores": cores, "chars_per_s": cps,
            "text": f"arithmetic ceiling (computed from measured inputs, not a run): {macs:,} multiply-adds a character; "
                    f"{cores} cores x one-thread sgemm 2048^3 = {flops / 1e9:.0f} GFLOP/s -> at most {cps:,.0f} chars/s "
                    f"with nothing else done"}


def _row(r: dict) -> str:
    f = lambda v: "-" if v is None else f"{v:,.0f}"  # noqa: E731
    return (f"{r['clients']:>4} clients {r['seconds']:>5.0f} s: {r['chars_per_s']:>9,.0f} chars/s  TTFC p50 "
            f"{f(r['ttfc_p50_ms'])} ms p99 {f(r['ttfc_p99_ms'])} ms  requests {r['requests']}  errors {r['errors']}"
            f"{' ' + str(r['error_kinds']) if r['errors'] else ''}  RSS {r['rss_start_mb']:.0f} -> {r['rss_end_mb']:.0f} MB"
            f"  CPU cores: server {r['server_cpu_per_s']:.2f} (event loop {r['event_loop_cpu_per_s']:.2f}), "
            f"load generator ({r['client']}) {r['client_cpu_per_s']:.2f}")


if __name__ == "__main__":
    main()
