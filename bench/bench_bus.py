"""Messages per second through the bus: RabbitBus against a bare pika loop with the same durability.

Both sides: durable queue, persistent messages, one publish at a time with publisher confirms, a
consumer with manual acks and the same prefetch. The bus adds envelope (de)serialisation, the priority
queue, a worker thread per handler and the hand-over of every settle to the connection thread.

Two workloads, N messages each:
- phases: publish all, then consume all (shows the publish and the consume+ack cost separately);
- pipeline: a consumer runs while the messages are published (steady state, as in the daemon).
The SQLite bus runs the phases for information.

    .venv/bin/python bench/bench_bus.py [--n 5000] [--prefetch 1] [--rounds 2] [--url amqp://...]

Each side runs ``rounds`` times, alternating, and the best round counts (the machines are noisy).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stacdrop.bus import open_bus
from stacdrop.bus.base import Bus, Delivery
from stacdrop.bus.rabbitmq import RabbitBus
from stacdrop.messages import Envelope, IngestRequest, Source

QUEUE = "process"


def envelopes(n: int) -> list[Envelope]:
    return [
        Envelope.wrap(f"job-{i}", IngestRequest(source=Source(url=f"/inbox/c/{i}.tif", key=f"c/{i}.tif",
                                                              content_key=f"{i:064x}"), collection="c"))
        for i in range(n)
    ]


def run_bus(bus: Bus, n: int, prefetch: int, pipeline: bool = False) -> tuple[float, float]:
    """Phases: (publish seconds, consume seconds). Pipeline: (0, seconds from first publish to last ack)."""
    envs = envelopes(n)
    done = threading.Event()
    count = 0
    lock = threading.Lock()

    def handler(delivery: Delivery) -> None:
        nonlocal count
        delivery.ack()
        with lock:
            count += 1
            if count == n:
                done.set()

    stop = threading.Event()
    thread = threading.Thread(target=bus.consume, args=(QUEUE, handler, stop), kwargs={"prefetch": prefetch})
    if pipeline:
        thread.start()
        time.sleep(0.5)  # consumer connected
    start = time.perf_counter()
    for env in envs:
        bus.publish(QUEUE, env)
    published = time.perf_counter()
    if not pipeline:
        thread.start()
    done.wait()
    consumed = time.perf_counter()
    stop.set()
    thread.join()
    if pipeline:
        return 0.0, consumed - start
    return published - start, consumed - published


def run_bare(url: str, n: int, prefetch: int, pipeline: bool = False) -> tuple[float, float]:
    """Same workload on a plain durable queue: publisher and consumer on their own connections."""
    queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    bodies = [env.to_bytes() for env in envelopes(n)]
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    ch.confirm_delivery()
    finished: list[float] = []

    def consume() -> None:
        cconn = pika.BlockingConnection(pika.URLParameters(url))
        consumer = cconn.channel()
        consumer.basic_qos(prefetch_count=prefetch)
        count = 0

        def on_message(channel, method, _props, body) -> None:
            nonlocal count
            Envelope.from_bytes(body)  # the bus parses every message; so does any real consumer
            channel.basic_ack(method.delivery_tag)
            count += 1
            if count == n:
                finished.append(time.perf_counter())
                channel.stop_consuming()

        consumer.basic_consume(queue, on_message)
        consumer.start_consuming()
        cconn.close()

    thread = threading.Thread(target=consume)
    try:
        if pipeline:
            thread.start()
            time.sleep(0.5)
        start = time.perf_counter()
        for i, body in enumerate(bodies):
            ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, message_id=str(i),
                                                                   content_type="application/json"), mandatory=True)
        published = time.perf_counter()
        if not pipeline:
            thread.start()
        thread.join()
    finally:
        ch.queue_delete(queue)
        conn.close()
    if pipeline:
        return 0.0, finished[0] - start
    return published - start, finished[0] - published


def rate(n: int, seconds: tuple[float, float]) -> str:
    pub, con = seconds
    return f"{n / (pub + con):6.0f} msg/s (publish {n / pub:5.0f}/s, then consume+ack {n / con:5.0f}/s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--prefetch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    args = parser.parse_args()
    n = args.n

    runs: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for pipeline in (False, True):
            runs.setdefault(("bare", pipeline), []).append(run_bare(args.url, n, args.prefetch, pipeline))
            bus = RabbitBus(args.url, prefix=f"bench-{uuid.uuid4().hex[:8]}")
            try:
                bus.setup()
                runs.setdefault(("bus", pipeline), []).append(run_bus(bus, n, args.prefetch, pipeline))
            finally:
                bus.delete_topology()
                bus.close()
    best = {key: min(values, key=sum) for key, values in runs.items()}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = open_bus(f"sqlite:///{tmp}/queue.db")
        try:
            sqlite_run = run_bus(sqlite, n, args.prefetch)
        finally:
            sqlite.close()

    print(f"N={n} messages of {len(envelopes(1)[0].to_bytes())} bytes, prefetch={args.prefetch}, "
          f"best of {args.rounds} rounds")
    print(f"phases    bare pika : {rate(n, best['bare', False])}")
    print(f"phases    RabbitBus : {rate(n, best['bus', False])}")
    print(f"pipeline  bare pika : {n / sum(best['bare', True]):6.0f} msg/s (consumer running while publishing)")
    print(f"pipeline  RabbitBus : {n / sum(best['bus', True]):6.0f} msg/s")
    bare_p, bus_p = best["bare", False], best["bus", False]
    print(f"ratio RabbitBus/bare: pipeline {sum(best['bare', True]) / sum(best['bus', True]):.2f}, "
          f"phases {sum(bare_p) / sum(bus_p):.2f} (publish {bare_p[0] / bus_p[0]:.2f}, "
          f"consume+ack {bare_p[1] / bus_p[1]:.2f}); aim >= 0.8")
    print(f"phases    SqliteBus : {rate(n, sqlite_run)} (info)")


if __name__ == "__main__":
    main()
