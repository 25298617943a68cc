"""Receiver load: 5,000 signed events from 50 concurrent senders on loopback.

The receiver runs in its own process through the same `serve` as `trace-pipelines webhooks
serve` (uvicorn, the real app, SQLite landing store under a scratch TRACE_HOME). Fifty
senders post 5,000 distinct events, then re-send 500 of them as Stripe's retries would (fresh
signatures); the script checks that every event is stored once, and prints acknowledgement
latency percentiles. Goal: p99 under 50 ms.

    .venv/bin/python bench/bench_webhooks.py [--events 5000] [--senders 50] [--generator wrk]

The load generator matters on two cores: a Python sender (httpx) spends about as much CPU per
request as the receiver, so its figures measure the two together. `--generator wrk` (Debian's
`wrk`, `apt-get install wrk`) sends the same pre-signed events from C over 50 keep-alive
connections and is the default when `wrk` is on the PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SECRET = "whsec_bench_receiver"
ACCOUNT = "acct_1BenchLoad"

_SERVER = """
import sys
from trace_pipelines.resources.landing import SqliteLandingStore
from trace_pipelines.sites import SiteRegistry
from trace_pipelines.web.app import serve
home, port = sys.argv[1], int(sys.argv[2])
serve(port=port, landing=SqliteLandingStore(home + "/landing.sqlite"),
      registry=SiteRegistry(home + "/sites.sqlite"), secrets=[sys.argv[3]])
"""


def sign(body: str, timestamp: int) -> str:
    digest = hmac.new(SECRET.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def event(i: int) -> str:
    now = int(time.time())
    return json.dumps(
        {
            "id": f"evt_bench_{i:07d}",
            "object": "event",
            "type": "charge.succeeded",
            "created": now,
            "account": ACCOUNT,
            "api_version": "2026-10-28.endive",
            "data": {
                "object": {
                    "id": f"ch_bench_{i:07d}",
                    "object": "charge",
                    "created": now,
                    "amount": 1000 + i,
                    "currency": "usd",
                    "status": "succeeded",
                    "paid": True,
                    "captured": True,
                    "metadata": {"trace_visitor_id": f"v_{i}"},
                }
            },
        }
    )


async def send_all(url: str, numbers: list[int], senders: int, retry: bool) -> list[float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in numbers:
        queue.put_nowait(n)
    latencies: list[float] = []
    failures: list[int] = []

    async def sender() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            # Open the connection first, as a warm load generator does: what is timed is the
            # receiver's answer to a delivery, not the TCP handshake of fifty sockets at once.
            await client.get(url.replace("/stripe/webhooks", "/healthz"))
            while not queue.empty():
                n = queue.get_nowait()
                body = event(n)
                # A retry is signed at another second, as Stripe signs each attempt.
                headers = {"Stripe-Signature": sign(body, int(time.time()) - (1 if retry else 0))}
                started = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    failures.append(response.status_code)

    await asyncio.gather(*(sender() for _ in range(senders)))
    if failures:
        raise SystemExit(f"{len(failures)} deliveries were not acknowledged: {failures[:5]}")
    return latencies


_WRK_SCRIPT = """
local requests, sent, answered = {}, 0, 0
function init(args)
  for line in io.lines("%(requests)s") do
    local tab = line:find("\\t")
    table.insert(requests, {line:sub(1, tab - 1), line:sub(tab + 1)})
  end
end
function request()
  sent = sent + 1
  local r = requests[sent]
  local headers = {["Stripe-Signature"] = r[1], ["Content-Type"] = "application/json"}
  return wrk.format("POST", nil, headers, r[2])
end
function response(status, headers, body)
  answered = answered + 1
  if answered >= %(events)d then wrk.thread:stop() end
end
"""


def send_with_wrk(
    url: str, events: int, senders: int, home: Path, first: int = 0
) -> dict[str, float]:
    """Post `events` distinct signed events (ids from `first`) with wrk; its percentiles, in ms."""
    requests = home / f"requests-{first}.tsv"
    now = int(time.time())
    # A few more than `events`: the requests in flight when wrk stops must be distinct too.
    with open(requests, "w") as handle:
        for n in range(first, first + events + senders * 2):
            body = event(n)
            handle.write(f"{sign(body, now)}\t{body}\n")
    script = home / f"post-{first}.lua"
    script.write_text(_WRK_SCRIPT % {"requests": requests, "events": events})
    output = subprocess.run(
        ["wrk", "-t1", f"-c{senders}", "-d10s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in output:
        raise SystemExit(f"some deliveries were not acknowledged:\n{output}")
    figures = {}
    for name in ("50", "90", "99"):
        value, unit = re.search(rf"^\s+{name}%\s+([\d.]+)(us|ms|s)$", output, re.M).groups()
        figures[f"p{name}"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    # wrk's Requests/sec divides by -d even when the script stops early; Req/Sec is the rate
    # while the connection thread was sending.
    rate, kilo = re.search(r"Req/Sec\s+([\d.]+)(k?)", output).groups()
    figures["requests_per_second"] = float(rate) * (1000 if kilo else 1)
    return figures


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument(
        "--generator", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python"
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench_webhooks_"))
    from trace_pipelines.resources.landing import SqliteLandingStore
    from trace_pipelines.sites import SiteRegistry

    SiteRegistry(home / "sites.sqlite").connect("site_bench", "bench.example.com", ACCOUNT)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(home), str(port), SECRET],
        env={**os.environ, "TRACE_HOME": str(home)},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        url = f"{base}/stripe/webhooks"
        if args.generator == "wrk":
            # Three rounds of fresh events; the median round is reported, as the machine is
            # shared and a single p99 moves with whatever else runs.
            rounds = [
                send_with_wrk(url, args.events, args.senders, home, first=r * 1_000_000)
                for r in range(3)
            ]
            wrk_figures = sorted(rounds, key=lambda figures: figures["p99"])[1]
            latencies, seconds = [], args.events / wrk_figures["requests_per_second"]
        else:
            started = time.perf_counter()
            latencies = asyncio.run(send_all(url, list(range(args.events)), args.senders, False))
            seconds = time.perf_counter() - started
        retries = list(range(0, args.events, 10))
        retry_latencies = asyncio.run(send_all(url, retries, args.senders, True))
        stats = httpx.get(f"{base}/stripe/webhooks/stats").json()
    finally:
        server.terminate()
        server.wait(timeout=10)

    landing = SqliteLandingStore(home / "landing.sqlite")
    stored = landing.read_after(0, limit=args.events * 10)
    distinct = {e.event_id for e in stored}
    acknowledged = stats["responses"].get("stored", 0)
    print(f"generator: {args.generator}; events sent: {acknowledged} from {args.senders} senders, "
          f"then {len(retries)} retries")  # fmt: skip
    print(f"stored: {len(stored)} rows, {len(distinct)} distinct (acknowledged {acknowledged})")
    print(f"answers: {stats['responses']}")
    print(f"throughput: {args.events / seconds:.0f} events/s")
    if args.generator == "wrk":
        print("ack p99 of the three rounds: " + ", ".join(f"{r['p99']:.1f} ms" for r in rounds))
        for name in ("p50", "p90", "p99"):
            print(f"ack {name} (median round): {wrk_figures[name]:.1f} ms")
    else:
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            print(f"ack {name}: {percentile(latencies, q) * 1000:.1f} ms")
    retry_p99 = percentile(retry_latencies, 0.99) * 1000
    print(f"retries (Python sender): p99 {retry_p99:.1f} ms, max {max(retry_latencies) * 1000:.1f}")
    expected = args.events * (3 if args.generator == "wrk" else 1)
    ok = len(stored) == len(distinct) == acknowledged >= expected
    print("exactly once:", "yes" if ok else "NO")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
