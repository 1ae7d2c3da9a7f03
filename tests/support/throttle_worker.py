"""One replica's worth of throttle demand, as an OS process, for the multi-process limiter test.

    python -m tests.support.throttle_worker --redis URL --pisano URL --token T --windows W \
        --threads 8 --seconds 75 --skew 7.5 --out result.json

Every thread wants a slot all the time (saturated demand): reserve, sleep until the slot, POST
one recipient, or give the slot up if woken more than half the margin after it, as the product
does. The process's wall and monotonic clocks are shifted by `--skew` seconds before anything is
imported, as a replica with a wrong clock would be: the limiter must not care.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid

_real_time, _real_monotonic = time.time, time.monotonic


def skew_clocks(seconds: float) -> None:
    time.time = lambda: _real_time() + seconds  # type: ignore[assignment]
    time.monotonic = lambda: _real_monotonic() + seconds  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--redis", "--pisano", "--token", "--windows", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--skew", type=float, default=0.0)
    parser.add_argument("--margin-ms", type=int, default=100)
    parser.add_argument("--horizon-ms", type=int, default=5000)
    args = parser.parse_args()
    skew_clocks(args.skew)

    import httpx

    from consumer.config.windows import parse_rate_limits
    from consumer.delivery.slots import Slot
    from consumer.state.limiter import LimiterHeartbeat, RedisLimiter
    from consumer.state.redis import Keys, connect

    limiter = RedisLimiter(connect(args.redis), Keys("throttle-test"), args.token, parse_rate_limits(args.windows),
                          margin_ms=args.margin_ms, horizon_ms=args.horizon_ms)
    LimiterHeartbeat([limiter]).start()  # as in a replica: the state hears from it while it waits
    client = httpx.Client(base_url=args.pisano, headers={"Authorization": f"Token token={args.token}"},
                          limits=httpx.Limits(max_connections=args.threads))
    statuses: dict[str, int] = {}
    refusals = [0]
    wasted = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds
    stop = threading.Event()

    def acquirer(n: int) -> None:
        while time.monotonic() < deadline:
            grant = limiter.acquire()
            if not grant.granted:
                with lock:
                    refusals[0] += 1
                stop.wait(max(0.01, grant.wait_s if grant.held else grant.wait_s - args.horizon_ms / 1000))
                continue
            # As the product's senders do (consumer/delivery/slots.py): the slot counts from when
            # the script ran, somewhere in the call's round trip.
            slot = Slot(grant.received_at + grant.wait_s, grant.round_trip_s)
            stop.wait(max(0.0, slot.at - time.monotonic()))
            if slot.late_s(time.monotonic()) > args.margin_ms / 2000:
                # Woken late (4 processes of 8 threads on 2 cores), or the reply came back late: a
                # late request gives its slot up rather than reach Pisano after a later slot's request.
                with lock:
                    wasted[0] += 1
                continue
            phone = f"+90555{uuid.uuid4().int % 10_000_000:07d}"
            response = client.post("/v1/sms_campaigns/ae51458c-9e82-417f-8f1d-e074891ea5c1/sms_sharings",
                                   json={"phone_numbers": [phone]})
            with lock:
                statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1

    threads = [threading.Thread(target=acquirer, args=(n,)) for n in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump({"statuses": statuses, "refusals": refusals[0], "wasted": wasted[0], "skew": args.skew}, out)


if __name__ == "__main__":
    main()
