"""Per-call cost of the in-process binding vs the same gateway over loopback HTTP.

Every path sends the same Anthropic request (non-streaming, then streaming) to the same mock
upstream (gateway-mock, started in this process) and reads the whole response:

  direct      httpx -> mock                         (what one loopback HTTP hop costs from Python)
  loopback    httpx -> gw.serve() -> mock           (the gateway as an HTTP server, over loopback)
  sync        gw.request_sync(...).read() -> mock   (in-process, blocking)
  async       await gw.request(...); await read()   (in-process, asyncio)

"overhead" is a path's median minus the direct path's median: what the gateway adds on top of the
upstream hop it has to make anyway. Rounds alternate between the paths so drift from other load
on the machine spreads evenly. Everything stays on 127.0.0.1 and every loop is bounded.

Build the extension in release mode first (debug numbers mean little):

    maturin develop --release --manifest-path gateway-py/Cargo.toml
    python gateway-py/bench/bench_inprocess.py [--calls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List

import httpx

import llm_gateway
from llm_gateway.testing import MockUpstream

KEY = "sk-bench-000001"
MODEL = "claude-sonnet-4-5"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
MESSAGES = [{"role": "user", "content": "Hello"}]


def percentile(samples: List[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="calls per path per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    mock = MockUpstream()
    config = {
        "providers": [{"name": "mock", "type": "claude", "base_url": mock.url, "api_key": "upstream"}],
        "users": [{"name": "bench", "keys": [{"name": "k", "key": KEY}]}],
        "prices": [{"model": MODEL, "input_per_mtok": "3", "output_per_mtok": "15"}],
    }
    gw = llm_gateway.Gateway(config)
    server = gw.serve()
    client = httpx.Client(timeout=10)
    loop = asyncio.new_event_loop()

    results: Dict[str, Dict[str, float]] = {}
    for stream in (False, True):
        body = {"model": MODEL, "max_tokens": 64, "messages": MESSAGES, "stream": stream}
        raw = json.dumps(body).encode()

        def direct() -> None:
            r = client.post(f"{mock.url}/v1/messages", headers=HEADERS, content=raw)
            assert r.status_code == 200 and r.content

        def loopback() -> None:
            r = client.post(f"{server.url}/v1/messages", headers=HEADERS, content=raw)
            assert r.status_code == 200 and r.content

        def sync() -> None:
            r = gw.request_sync("POST", "/v1/messages", headers=HEADERS, body=raw)
            assert r.status == 200 and r.read()

        async def one_async() -> None:
            r = await gw.request("POST", "/v1/messages", headers=HEADERS, body=raw)
            assert r.status == 200 and await r.read()

        def run_async(n: int) -> List[float]:
            async def timed() -> List[float]:
                out = []
                for _ in range(n):
                    t = time.perf_counter()
                    await one_async()
                    out.append(time.perf_counter() - t)
                return out

            return loop.run_until_complete(timed())

        def run_sync(fn: Callable[[], None], n: int) -> List[float]:
            out = []
            for _ in range(n):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
            return out

        paths: Dict[str, Callable[[int], List[float]]] = {
            "direct": lambda n: run_sync(direct, n),
            "loopback": lambda n: run_sync(loopback, n),
            "sync": lambda n: run_sync(sync, n),
            "async": run_async,
        }
        samples: Dict[str, List[float]] = {name: [] for name in paths}
        for name, run in paths.items():  # warm-up: connections, pools, caches
            run(min(200, args.calls))
        for _ in range(args.rounds):
            for name, run in paths.items():
                samples[name].extend(run(args.calls))

        kind = "stream" if stream else "json"
        base = statistics.median(samples["direct"])
        for name, s in samples.items():
            med = statistics.median(s)
            results[f"{kind}/{name}"] = {
                "calls": len(s),
                "median_us": med * 1e6,
                "p99_us": percentile(s, 0.99) * 1e6,
                "overhead_us": (med - base) * 1e6,
            }

    server.close()
    mock.stop()
    client.close()
    loop.close()

    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {args.rounds} rounds x {args.calls} calls, "
        f"load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    print(f"{'path':<18}{'median us':>12}{'p99 us':>12}{'overhead us':>14}")
    for name, r in results.items():
        print(f"{name:<18}{r['median_us']:>12.0f}{r['p99_us']:>12.0f}{r['overhead_us']:>14.0f}")
    for kind in ("json", "stream"):
        inproc = min(results[f"{kind}/sync"]["median_us"], results[f"{kind}/async"]["median_us"])
        verdict = "OK" if inproc <= results[f"{kind}/loopback"]["median_us"] else "SLOWER"
        print(f"{kind}: in-process {inproc:.0f} us vs loopback {results[f'{kind}/loopback']['median_us']:.0f} us: {verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
