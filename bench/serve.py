"""HTTP load against the Serve app: 2,000 requests at concurrency 32 with real SST-2 dev
sentences, to (a) the student with batching, (b) the teacher with batching, (c) the student
without batching, (d) the int8 student with batching. All four are started by this script on this
machine, on one local Ray, and take turns: `--rounds` rounds in which each server gets its share of
the requests in a rotated order, so that a slow spell of the machine hits all of them alike. req/s
is the median round; latency percentiles are over all requests.

    python bench/serve.py --student runs/bench-quality/student --teacher runs/bench-quality/teacher
    python bench/serve.py ... --high-throughput     # Serve's high-throughput mode (serve.high_throughput)
    python bench/serve.py ... --onnx                # the student on serve.backend=torch vs onnx (fp32, int8)
    python bench/serve.py ... --qa runs/bench-squad/run/student   # + a QA server: POST /v1/answer

With --qa, a QA model dir is served beside the others (same replica, batching and load settings)
and takes its turns with them: (q) POST /v1/answer with real SQuAD dev (question, context) pairs,
each context read in --qa-max-length windows overlapping by --qa-doc-stride (the squad preset's).

Targets: 0 errors; student/teacher throughput >= 1.8x; batched/unbatched >= 2x. With --onnx the
servers are instead the batched student on the torch backend and on ONNX Runtime, fp32 and int8
dynamic (its ONNX export is made first when absent).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import socket
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import REPO, cpu_lock, machine, save, sst2_or_exit, table  # noqa: E402


def dev_sentences(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r[1] for r in rows[1:] if len(r) > 1 and r[1].strip()]


def squad_pairs(path: Path) -> list[dict[str, str]]:
    """{"question", "context"} request bodies from a SQuAD v1.1 file."""
    from distillray.tasks.qa import read_squad

    return [{"question": ex.question, "context": ex.context} for ex in read_squad(path)]


async def load(url: str, texts: list[str] | list[dict], n: int, concurrency: int) -> dict[str, float]:
    """`n` POSTs at `concurrency`: {"text": t} per text, or each dict as the body itself (QA).
    An error is a non-200, or a body without predictions / answers."""
    import aiohttp

    body_of = (lambda i: texts[i % len(texts)]) if isinstance(texts[0], dict) else \
        (lambda i: {"text": texts[i % len(texts)]})

    lat: list[float] = []
    errors = 0
    queue = iter(range(n))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for i in queue:
            t0 = time.perf_counter()
            try:
                async with session.post(url, json=body_of(i)) as r:
                    body = await r.json()
                    if r.status != 200 or not ("predictions" in body or "answers" in body):
                        errors += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                errors += 1
            lat.append((time.perf_counter() - t0) * 1000)

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:
        for i in range(concurrency):  # warm-up, not counted
            async with session.post(url, json=body_of(i)) as r:
                await r.read()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"req_per_s": n / wall, "errors": errors, "requests": n, "wall_s": wall, "latencies_ms": lat}


def summary(rounds: list[dict]) -> dict[str, float]:
    """One server over all its rounds: the median round's req/s, latency percentiles over every request."""
    a = np.concatenate([r["latencies_ms"] for r in rounds])
    return {"req_per_s": float(np.median([r["req_per_s"] for r in rounds])),
            "req_per_s_rounds": [round(r["req_per_s"], 1) for r in rounds],
            "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "errors": sum(r["errors"] for r in rounds),
            "requests": sum(r["requests"] for r in rounds)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", default=str(REPO / "runs" / "bench-quality" / "student"))
    p.add_argument("--teacher", default=str(REPO / "runs" / "bench-quality" / "teacher"))
    p.add_argument("--requests", type=int, default=2000, help="per server, over all rounds")
    p.add_argument("--rounds", type=int, default=4, help="the servers take turns, this many times each")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--cpus-per-replica", type=int, default=1,
                   help="threads of the one replica (the load generator and proxy need the other core)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--high-throughput", action="store_true",
                   help="Ray Serve's high-throughput mode (serve.high_throughput: HAProxy ingress, gRPC between replicas)")
    p.add_argument("--onnx", action="store_true",
                   help="servers: the student on serve.backend=torch, onnx, and onnx with serve.quantize=true")
    p.add_argument("--qa", default=None, help="a QA model dir to serve beside the others (POST /v1/answer)")
    p.add_argument("--qa-max-length", type=int, default=384, help="--qa: tokens per window")
    p.add_argument("--qa-doc-stride", type=int, default=128, help="--qa: overlap of a context's windows")
    p.add_argument("--lock", default=None)
    p.add_argument("overrides", nargs="*", help="config key=value for every server (serve.batch_wait_timeout_s=0.01, ...)")
    p.add_argument("--output-dir", default=str(REPO / "runs" / "bench-serve"))
    args = p.parse_args()
    from distillray.config import load_config
    from distillray.errors import ConfigError

    try:
        load_config(None, args.overrides)  # a bad key or value stops here, before Ray starts
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    texts = dev_sentences(sst2_or_exit() / "dev.tsv")
    for d in (args.student, args.teacher):
        if not (Path(d) / "config.json").exists():
            print(f"error: {d} is not an exported model dir; run bench/quality.py or `make demo` first, "
                  "or pass --student/--teacher", file=sys.stderr)
            return 2
    pairs: list[dict[str, str]] = []
    if args.qa:
        from distillray.tasks.qa import is_qa_model

        squad = (REPO / ".." / "shared" / "data" / "squad" / "dev.json").resolve()
        if not (Path(args.qa) / "config.json").exists() or not is_qa_model(args.qa):
            print(f"error: --qa {args.qa} is not an exported QA model dir; run bench/squad.py first", file=sys.stderr)
            return 2
        if not squad.exists():
            print(f"error: --qa needs SQuAD dev at {squad} (put ../shared/data/squad beside the repo)", file=sys.stderr)
            return 2
        pairs = squad_pairs(squad)

    from ray import serve

    from distillray.evaluation import rotated
    from serve.app import bind
    from serve.local import local_serve

    batched = f"serve.max_batch_size={args.max_batch_size}"
    cases = [("a student, batched", args.student, [batched]),
             ("b teacher, batched", args.teacher, [batched]),
             ("c student, unbatched", args.student, ["serve.max_batch_size=1"]),
             ("d int8 student, batched", args.student, [batched, "serve.quantize=true"])]
    if args.onnx:
        from distillray.models.onnx import export_onnx, onnx_path, quantize_onnx_dynamic

        if not onnx_path(args.student).is_file():
            export_onnx(args.student)
        if not onnx_path(args.student, "int8-dynamic").is_file():
            quantize_onnx_dynamic(args.student)
        cases = [cases[0], ("e student, ONNX Runtime backend", args.student, [batched, "serve.backend=onnx"]),
                 ("f int8 student, ONNX Runtime backend", args.student,
                  [batched, "serve.backend=onnx", "serve.quantize=true"])]
    if args.qa:  # under the squad preset: its windows and decoding are what Serve answers with
        cases.append(("q QA student, batched (/v1/answer)", args.qa,
                      [batched, f"data.max_length={args.qa_max_length}", f"data.doc_stride={args.qa_doc_stride}"]))
    per_round: dict[str, list[dict]] = {name: [] for name, _, _ in cases}
    with cpu_lock(args.lock):
        # all four apps at once (logical CPUs for their replicas; each model replica still runs
        # cpus_per_replica torch threads), so that the servers can take turns
        port = free_port()
        ray_cfg = load_config(None, [f"serve.high_throughput={str(args.high_throughput).lower()}",
                                     f"run.num_cpus={len(cases) * args.cpus_per_replica + 2}"])
        with local_serve(ray_cfg, port, request_timeout_s=60):
            for name, model, extra in cases:
                cfg = load_config("squad" if name.startswith("q ") else None,
                                  [f"serve.model={model}", f"serve.cpus_per_replica={args.cpus_per_replica}",
                                   "serve.max_ongoing_requests=64", *args.overrides, *extra])
                serve.run(bind(cfg), name=f"bench-{name[0]}", route_prefix=f"/{name[0]}")
            for r in range(args.rounds):
                for name, _, _ in rotated(cases, r):
                    qa = name.startswith("q ")
                    got = asyncio.run(load(f"http://127.0.0.1:{port}/{name[0]}/v1/{'answer' if qa else 'classify'}",
                                           pairs if qa else texts, args.requests // args.rounds, args.concurrency))
                    per_round[name].append(got)
                    print(f"round {r + 1}/{args.rounds}", name, f"{got['req_per_s']:.1f} req/s, {got['errors']} errors",
                          flush=True)
    results = {name: summary(rounds) for name, rounds in per_round.items()}
    rows = [(k, v["req_per_s"], v["p50_ms"], v["p95_ms"], v["p99_ms"], v["errors"]) for k, v in results.items()]
    print(f"\nbench/serve.py on {machine()}: {args.requests} requests per server in {args.rounds} alternating "
          f"rounds x concurrency {args.concurrency}, "
          f"1 replica x {args.cpus_per_replica} CPU, max_batch_size {args.max_batch_size}, Serve "
          f"{'high-throughput mode (HAProxy, gRPC)' if args.high_throughput else 'default mode (Python proxy)'}"
          f"{', ' + ' '.join(args.overrides) if args.overrides else ''}\n")
    print(table(rows, ("server", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors")))

    def spread(x: dict, y: dict) -> str:  # the same ratio within each round
        each = [p / q for p, q in zip(x["req_per_s_rounds"], y["req_per_s_rounds"])]
        return f"{min(each):.2f}-{max(each):.2f}"

    if args.onnx:
        a, e, f = (results[k[0]] for k in cases)
        ratios = [("ONNX Runtime / torch backend, student", e["req_per_s"] / a["req_per_s"], spread(e, a), ""),
                  ("ONNX Runtime int8 / torch backend, student", f["req_per_s"] / a["req_per_s"], spread(f, a), "")]
    else:
        a, b, c, d = (results[k[0]] for k in cases[:4])
        ratios = [("student / teacher throughput (batched)", a["req_per_s"] / b["req_per_s"], spread(a, b), ">= 1.8"),
                  ("batched / unbatched (student)", a["req_per_s"] / c["req_per_s"], spread(a, c), ">= 2"),
                  ("int8 / fp32 student throughput", d["req_per_s"] / a["req_per_s"], spread(d, a), "")]
    if args.qa:
        q = results[cases[-1][0]]
        ratios.append(("QA student questions/s / classifier student req/s", q["req_per_s"] / a["req_per_s"],
                       spread(q, a), ""))
    ratios.append(("errors (all servers)", sum(v["errors"] for v in results.values()), "", "0"))
    print()
    print(table(ratios, ("ratio", "value (median rounds)", "per round", "target")))
    save(Path(args.output_dir), ("serve-high-throughput" if args.high_throughput else "serve") + ("-onnx" if args.onnx else "")
         + ("-qa" if args.qa else ""),
         {"results": results, "ratios": {r[0]: r[1] for r in ratios}, "args": vars(args), "machine": machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
