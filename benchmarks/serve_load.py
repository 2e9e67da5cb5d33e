"""Load test of `speech-adapter serve`: requests/s and p50/p95 latency at 1, 4 and 8 clients.

The server runs in this process on 127.0.0.1 (a free port; nothing else is contacted) with the
offline default pair (`ModelConfig()`'s encoder and LLM, adapter untrained: speed does not
depend on its weights), or the tiny random pair with --quick; the table names the pair. Each
level sends the same number of non-streaming requests (a 3 s clip, greedy, a fixed max_tokens),
split evenly over its clients; every client waits for its answer before it sends the next. The
server generates one reply at a time, so requests/s should stay flat as clients are added while
latency grows with the queue; "nothing dropped" means every request got a 200 with a reply.

    python -m benchmarks.serve_load [--quick] [--threads 1] [--requests 24] [--max-tokens 16]
"""

from __future__ import annotations

import base64
import io
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Result, base_parser, load_model, print_table, setup_threads, synth_clip

LEVELS = (1, 4, 8)
NAME = "bench-model"


def request_body(max_tokens: int) -> dict:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, synth_clip(3.0, seed=1), 16000, format="WAV", subtype="PCM_16")
    audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(buf.getvalue()).decode(), "format": "wav"}}
    return {"model": NAME, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": [audio, {"type": "text", "text": "What can you hear?"}]}]}


def run_level(url: str, body: dict, clients: int, requests: int) -> dict:
    """`requests` requests from `clients` threads; latencies, wall time, failures."""
    import httpx

    def client(n: int) -> list[tuple[float, bool]]:
        out = []
        with httpx.Client(timeout=600) as http:
            for _ in range(n):
                t0 = time.perf_counter()
                r = http.post(f"{url}/v1/chat/completions", json=body)
                ok = r.status_code == 200 and bool(r.json()["choices"][0]["message"]["content"])
                out.append((time.perf_counter() - t0, ok))
        return out

    share = [requests // clients + (i < requests % clients) for i in range(clients)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [x for part in pool.map(client, share) for x in part]
    wall = time.perf_counter() - t0
    lat = sorted(t for t, _ in results)
    return {"clients": clients, "requests": len(results), "ok": sum(ok for _, ok in results),
            "dropped": sum(not ok for _, ok in results), "wall_s": wall, "rps": len(results) / wall,
            "p50_s": statistics.median(lat), "p95_s": lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]}


def run(args) -> Result:
    from speech_adapter.serve.app import create_app
    from speech_adapter.serve.config import ServeConfig
    from speech_adapter.serve.server import background

    t_start = time.perf_counter()
    threads = setup_threads(args.threads)
    model = load_model(args.quick).eval()
    config = ServeConfig(model="(in memory)", max_pending=max(LEVELS) + 1)
    config.validate()
    body = request_body(args.max_tokens)
    levels = []
    with background(create_app(model, config, NAME), host="127.0.0.1") as url:
        run_level(url, body, 1, 1)  # warm-up
        for clients in LEVELS:
            levels.append(run_level(url, body, clients, args.requests))
            print(f"{clients} clients: {levels[-1]['rps']:.2f} req/s", flush=True)
    pair = f"{model.config.encoder} + {model.config.llm}"
    table = print_table(
        f"serve load: {pair}, 3 s clip, max_tokens {args.max_tokens}, {args.requests} requests per level",
        ["clients", "requests", "dropped", "req/s", "p50 s", "p95 s"],
        [[lv["clients"], lv["requests"], lv["dropped"], lv["rps"], lv["p50_s"], lv["p95_s"]] for lv in levels])
    dropped = sum(lv["dropped"] for lv in levels)
    return Result("serve_load", args.quick, threads, table,
                  headline={"rps_1": levels[0]["rps"], "rps_8": levels[-1]["rps"],
                            "p95_8_s": levels[-1]["p95_s"], "dropped": dropped},
                  data={"levels": levels, "max_tokens": args.max_tokens, "model": pair},
                  seconds=time.perf_counter() - t_start)


def main(argv=None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=24, help="requests per concurrency level")
    p.add_argument("--max-tokens", type=int, default=16, help="reply length limit per request")
    args = p.parse_args(argv)
    result = run(args)
    result.write(args.out)
    return 1 if result.headline["dropped"] else 0


if __name__ == "__main__":
    sys.exit(main())
