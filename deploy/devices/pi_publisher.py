#!/usr/bin/env python3
"""Equipment Live: send a machine's status from a Raspberry Pi over NATS (example device).

Contract for device integrators (prefix `eq`, machine id `<id>` = [A-Za-z0-9_-]{1,64}):

* Request/reply: request `eq.device.<id>.status` with JSON
  {"status": "green|yellow|red", "reason": "jam"?, "note": "..."?, "device_id": "..."?,
   "occurred_at": "<RFC 3339>"?, "command_id": "..."?}     (at most 8 KiB)
  Reply: {"ok": true, "version": N} or {"ok": false, "error": {"code": "...", "message": "..."}}.
* Durable: publish the same JSON through JetStream to `eq.ingest.<id>.status` with header
  `Nats-Msg-Id: <command_id>`. The publish ack comes as soon as the message is stored (even
  with no node up); nodes apply it later, in order. A later refusal goes to eq.rejects.<id>.
* One change = one command_id, generated once. On a timeout / no responders / a transient
  error, resend the SAME bytes (same command_id and occurred_at): the change is applied at
  most once and the retry gets the same answer. A new change gets a new command_id.
* The device's NATS user may only publish eq.device.<id>.> and eq.ingest.<id>.> and
  subscribe _INBOX.<id>.>, so the client must use the inbox prefix `_INBOX.<id>`.
* occurred_at is the Pi's clock; a wrong clock (no RTC) is flagged clock_suspect, not
  refused. The order of changes is the server's `version`.

  pi_publisher.py --server nats://127.0.0.1:4222 --id press-1 --user device-press-1 \
      --password "$PW" red --reason jam --note "clay stuck"
  pi_publisher.py --id kiln-2 --nkey-seed-file kiln-2.nk --durable yellow
  pi_publisher.py --id press-1 --user U --password P --demo      # cycle every 5 s

Exit codes: 0 accepted (or stored, --durable), 1 refused (prints the error code), 2 not
delivered (no answer after all attempts, connection or permission failure).
Needs `pip install -r requirements.txt` (nats-py, and nkeys for --nkey-seed-file).
"""
import argparse
import asyncio
import itertools
import json
import os
import random
import re
import sys
import uuid
from datetime import datetime, timezone

import nats
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout
from nats.js.errors import APIError, NoStreamResponseError

# Reply codes that mean "try again with the same command_id".
TRANSIENT = {"unavailable", "timed_out", "fenced", "actor_stopped", "not_hosted"}


class Denied(Exception):
    """The server refused this user a publish or subscription (wrong id or inbox prefix)."""


def message(status, args, reason=None):
    """One change: a fresh command_id and the Pi's clock, encoded once and resent as is."""
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = {"status": status, "command_id": str(uuid.uuid4()), "occurred_at": now}
    for key, value in (("reason", reason), ("note", args.note), ("device_id", args.device_id)):
        if value:
            body[key] = value
    return body["command_id"], json.dumps(body).encode()


async def with_retries(args, denied, attempt_once):
    """Runs attempt_once() until it returns an answer; backs off on timeouts (flaky Wi-Fi)."""
    delay = 0.5
    for attempt in range(1, args.attempts + 1):
        why = None
        try:
            answer = await attempt_once()
            code = (answer.get("error") or {}).get("code")
            if code not in TRANSIENT:
                return answer
            why = code
        except (NatsTimeout, NoRespondersError, NoStreamResponseError) as e:
            why = type(e).__name__
        if denied:
            raise Denied(denied[0])
        if attempt < args.attempts:
            wait = delay * random.uniform(1.0, 1.5)
            print(f"attempt {attempt}: {why}; retrying in {wait:.1f}s", file=sys.stderr)
            await asyncio.sleep(wait)
            delay = min(delay * 2, 16)
    gave_up = f"{why} after {args.attempts} attempts"
    return {"ok": False, "error": {"code": "undelivered", "message": gave_up}}


async def send(nc, args, denied, status, reason):
    command_id, payload = message(status, args, reason)
    if not args.durable:
        subject = f"eq.device.{args.id}.status"

        async def once():
            return json.loads((await nc.request(subject, payload, timeout=args.timeout)).data)
    else:
        subject, js = f"eq.ingest.{args.id}.status", nc.jetstream()

        async def once():
            try:
                ack = await js.publish(subject, payload, timeout=args.timeout,
                                       headers={"Nats-Msg-Id": command_id})
            except APIError as e:  # e.g. the stream is full
                return {"ok": False, "error": {"code": "jetstream", "message": str(e)}}
            return {"ok": True, "stored": True, "stream": ack.stream, "seq": ack.seq,
                    "duplicate": bool(ack.duplicate)}

    answer = await with_retries(args, denied, once)
    print(json.dumps({"command_id": command_id, "status": status, **answer}), flush=True)
    return answer


async def main(args):
    denied = []  # permission errors arrive asynchronously; a denied request just times out

    async def on_error(e):
        print(e, file=sys.stderr)
        if "permissions violation" in str(e).lower():
            denied.append(str(e))

    auth = {"nkeys_seed": args.nkey_seed_file} if args.nkey_seed_file else \
        {"user": args.user, "password": args.password} if args.user else {}
    try:
        nc = await nats.connect(args.server, name=f"pi-{args.id}", error_cb=on_error,
                                inbox_prefix=f"_INBOX.{args.id}", connect_timeout=args.timeout,
                                max_reconnect_attempts=-1 if args.demo else args.attempts,
                                reconnect_time_wait=1, **auth)
    except Exception as e:
        print(f"cannot connect to {args.server}: {e!r}", file=sys.stderr)
        return 2
    try:
        if not args.demo:
            answer = await send(nc, args, denied, args.status, args.reason)
            code = (answer.get("error") or {}).get("code")
            return 0 if answer["ok"] else 2 if code in ("undelivered", "jetstream") else 1
        for status in itertools.cycle(["green", "yellow", "red"]):
            reason = (args.reason or "demo") if status == "red" else None
            await send(nc, args, denied, status, reason)
            await asyncio.sleep(args.interval)
    except Denied as e:
        print(f"permission denied: {e} (is --id right for this user?)", file=sys.stderr)
        return 2
    finally:
        await nc.close()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", default="nats://127.0.0.1:4222")
    p.add_argument("--id", required=True, help="machine id (subject token)")
    p.add_argument("--user", help="device user, e.g. device-press-1")
    p.add_argument("--password", default=os.environ.get("EQ_DEVICE_PASSWORD"),
                   help="default: $EQ_DEVICE_PASSWORD (keeps it out of `ps`)")
    p.add_argument("--nkey-seed-file", help="file holding the device's nkey seed (SU...)")
    p.add_argument("--durable", action="store_true",
                   help="publish through JetStream to eq.ingest.<id>.status")
    p.add_argument("--demo", action="store_true", help="cycle green/yellow/red until Ctrl-C")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between demo changes")
    p.add_argument("--attempts", type=int, default=5, help="tries per change (same command_id)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each answer")
    p.add_argument("--device-id", help="who made the change (default on the server: device:<id>)")
    p.add_argument("--reason", help="reason code, e.g. jam")
    p.add_argument("--note")
    p.add_argument("status", nargs="?", choices=["green", "yellow", "red"])
    args = p.parse_args(argv)
    if not args.demo and not args.status:
        p.error("give a status (green, yellow or red) or --demo")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", args.id):
        p.error("--id must be 1-64 letters, digits, '_' or '-'")
    if args.user and args.nkey_seed_file:
        p.error("give --user/--password or --nkey-seed-file, not both")
    return args


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(parse_args())))
    except KeyboardInterrupt:
        sys.exit(0)
