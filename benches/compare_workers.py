#!/usr/bin/env python3
"""The distributed worker against the in-process pipeline, on the same calls and threads.

`callpipe worker --stage all` takes every call through real local SQS and S3 (moto) and Redis:
the recordings are uploaded to the `recordings` bucket first, so the ingest queue is full
when the worker starts (its bucket notification announces each upload), and the run ends when
`callpipe calls list` shows every call indexed. `callpipe run` reads the same files from the
local directory. Both are timed from the process's start, model loads included, and the cost
measure is audio seconds per wall second; the goal is worker / run >= 0.9.

Also measured:
  peak RSS        wait4's ru_maxrss for `run`; for the worker, VmHWM when the last call is
                  indexed (and again before SIGTERM, after the empty jobs)
  RSS vs depth    the worker's VmRSS and the ingest + transcribe + index queue depth (visible
                  plus in flight), sampled every second: it should stay flat as the backlog drains
  empty job       a 1 s silent 8 kHz WAV uploaded under a new key while the worker is warm and
                  idle, timed from the upload until it is indexed (all three stages), one at a
                  time, --empty-jobs times
  outside engine  the share of the replicas' wall time not spent in the engine: `run --json`'s
                  outside_engine_share; for the worker 1 - callpipe_engine_busy_seconds_total /
                  (wall x replicas), the counter read from /metrics once the worker is idle (the
                  worker samples the engine's total every 15 s, so it is read after a tick)

Rounds alternate run, worker, run, worker (--runs), each with fresh data directories and, for
the worker, fresh moto and redis servers; medians over the rounds are reported. The binary is
copied first, so a rebuild during the bench does not change it between rounds.

    compare_workers.py --callpipe BIN --moto-server BIN [--threads 2] [--runs 1]
                       [--empty-jobs 10] [--json FILE] CALLS_DIR
"""

import argparse
import io
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import wave

import boto3
from botocore.config import Config

STAGES = ("ingest", "transcribe", "index")
MAX_RECEIVES = 5
GOAL = 0.9


# ---------------------------------------------------------------------------------------------
# small helpers


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def proc_status(pid, field):
    """A `kB` field of /proc/PID/status in MiB (VmRSS, VmHWM), or None once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def proc_cpu_s(pid):
    """User + system CPU seconds of a running process (its threads included)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def clean_env():
    """This environment without callpipe config overrides (`CALLPIPE_CONFIG`, `SECTION__KEY`)
    or AWS settings, so both sides run on the defaults plus what is set here."""
    env = dict(os.environ)
    for k in list(env):
        if k == "CALLPIPE_CONFIG" or (k.startswith("CALLPIPE_") and "__" in k):
            del env[k]
        elif k.startswith("AWS_") and k != "AWS_CA_BUNDLE":
            del env[k]
    return env


def http_get(url, timeout=2.0):
    """(status, body) or (None, error text)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return None, str(e)


def parse_metrics(text):
    """Prometheus text → {(name, frozenset(labels)): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            head, value = line.rsplit(" ", 1)
            if "{" in head:
                name, rest = head.split("{", 1)
                labels = frozenset(
                    tuple(kv.split("=", 1)) for kv in rest.rstrip("}").replace('"', "").split(",") if kv
                )
            else:
                name, labels = head, frozenset()
            out[(name, labels)] = float(value)
        except ValueError:
            continue
    return out


def metric(metrics, name, **labels):
    want = set(labels.items())
    return sum(v for (n, l), v in metrics.items() if n == name and want <= set(l))


def silent_wav(seconds=1.0, rate=8000):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return buf.getvalue()


def list_calls(callpipe, data_dir, env):
    """`callpipe calls list --json` as records; empty before the index stage made the store."""
    if not os.path.exists(os.path.join(data_dir, "metadata.db")):
        return []
    out = subprocess.run(
        [callpipe, "--data-dir", data_dir, "calls", "list", "--json", "--limit", "100000"],
        capture_output=True, text=True, env=env, check=False,
    ).stdout
    calls = []
    for line in out.splitlines():
        try:
            calls.append(json.loads(line))
        except ValueError:
            pass
    return calls


def settled(call):
    return call.get("status") in ("indexed", "failed")


def wait_exit(proc, timeout):
    """wait4 with a deadline: (exit code, ru_maxrss MiB); SIGKILL past the deadline."""
    until = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss / 1024
        if time.monotonic() > until:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss / 1024
        time.sleep(0.1)


def tail(path, n=4000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# callpipe run


def run_inprocess(args, work, rnd):
    data = os.path.join(work, f"run-{rnd}", "data")
    os.makedirs(os.path.dirname(data))
    cmd = [args.callpipe, "--threads", str(args.threads), "--data-dir", data, "run", "--json",
           args.calls_dir]
    err_path = os.path.join(work, f"run-{rnd}", "run.log")
    with tempfile.TemporaryFile() as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=clean_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    if code != 0:
        sys.stderr.write(tail(err_path))
        raise SystemExit(f"failed ({code}): {shlex.join(cmd)}")
    s = json.loads(stdout.strip().splitlines()[-1])
    audio_s = s["audio_hours"] * 3600
    return {
        "system": "run", "round": rnd, "command": shlex.join([args.callpipe_shown] + cmd[1:]),
        "wall_s": wall, "summary_wall_s": s["wall_s"], "audio_s": audio_s,
        "throughput": audio_s / wall, "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024, "replicas": s["replicas"],
        "outside_engine_share": s["outside_engine_share"], "engine_busy_s": s["engine_busy_s"],
        "calls_indexed": s["calls_indexed"], "calls_failed": s["calls_failed"],
        "failures": s.get("failures", []), "segments": s["segments"],
    }


# ---------------------------------------------------------------------------------------------
# callpipe worker --stage all


class Servers:
    """moto (S3, SQS) and redis-server on free loopback ports, with the buckets and queues."""

    def __init__(self, args, work):
        self.moto_port, self.redis_port = free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.moto_port}"
        self.moto_cmd = [args.moto_server, "-H", "127.0.0.1", "-p", str(self.moto_port)]
        self.redis_cmd = [args.redis_server, "--bind", "127.0.0.1", "--port", str(self.redis_port),
                          "--save", "", "--appendonly", "no"]
        self.moto_log = open(os.path.join(work, "moto.log"), "wb")
        self.redis_log = open(os.path.join(work, "redis.log"), "wb")
        self.moto = subprocess.Popen(self.moto_cmd, stdout=self.moto_log, stderr=subprocess.STDOUT)
        self.redis = subprocess.Popen(self.redis_cmd, stdout=self.redis_log, stderr=subprocess.STDOUT)
        session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test",
                                        region_name="us-east-1")
        cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5})
        self.s3 = session.client("s3", endpoint_url=self.endpoint, config=cfg)
        self.sqs = session.client("sqs", endpoint_url=self.endpoint, config=cfg)
        self._wait_up()
        for bucket in ("recordings", "artifacts"):
            self.s3.create_bucket(Bucket=bucket)
        self.queues = {}
        for stage in STAGES:
            name = f"callpipe-{stage}"
            dlq = self.sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
            dlq_arn = self.sqs.get_queue_attributes(
                QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVES)}
            url = self.sqs.create_queue(
                QueueName=name, Attributes={"RedrivePolicy": json.dumps(policy)})["QueueUrl"]
            self.queues[stage] = (url, dlq)
        ingest_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queues["ingest"][0], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.s3.put_bucket_notification_configuration(
            Bucket="recordings",
            NotificationConfiguration={"QueueConfigurations": [
                {"QueueArn": ingest_arn, "Events": ["s3:ObjectCreated:*"]}]},
        )

    def _wait_up(self, timeout=30):
        until = time.monotonic() + timeout
        while True:
            try:
                self.s3.list_buckets()
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except Exception:  # noqa: BLE001 - not up yet, whatever the error
                pass
            for p, what in ((self.moto, "moto"), (self.redis, "redis-server")):
                if p.poll() is not None:
                    raise SystemExit(f"{what} exited ({p.returncode}); see its log")
            if time.monotonic() > until:
                raise SystemExit(f"moto or redis-server not answering after {timeout} s")
            time.sleep(0.2)

    def depth(self):
        """stage → visible + in-flight messages."""
        out = {}
        for stage, (url, _) in self.queues.items():
            a = self.sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            out[stage] = int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])
        return out

    def dead_letters(self):
        out = {}
        for stage, (_, dlq) in self.queues.items():
            a = self.sqs.get_queue_attributes(
                QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
            out[stage] = int(a["ApproximateNumberOfMessages"])
        return out

    def stop(self):
        for p in (self.moto, self.redis):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.moto_log.close()
        self.redis_log.close()


def side_cpu(servers):
    """CPU seconds so far of what shares the cores with the worker: moto, redis-server, and
    this script's polling (`calls list` children, boto3 calls in this process)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    return {"moto": proc_cpu_s(servers.moto.pid) or 0.0, "redis": proc_cpu_s(servers.redis.pid) or 0.0,
            "calls_list": children.ru_utime + children.ru_stime, "bench": me.ru_utime + me.ru_stime}


def worker_env(servers, listen):
    env = clean_env()
    env.update({
        "AWS_ENDPOINT_URL": servers.endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "CALLPIPE_STORAGE__OBJECT_STORE": "s3",
        "CALLPIPE_STORAGE__ARTIFACTS_BUCKET": "artifacts",
        "CALLPIPE_STORAGE__RECORDINGS_BUCKET": "recordings",
        "CALLPIPE_STORAGE__S3_FORCE_PATH_STYLE": "true",
        "CALLPIPE_QUEUE__INGEST_URL": servers.queues["ingest"][0],
        "CALLPIPE_QUEUE__TRANSCRIBE_URL": servers.queues["transcribe"][0],
        "CALLPIPE_QUEUE__INDEX_URL": servers.queues["index"][0],
        "CALLPIPE_REDIS__URL": f"redis://127.0.0.1:{servers.redis_port}",
        "CALLPIPE_WORKER__LISTEN": listen,
        "CALLPIPE_WORKER__POLL_WAIT_S": "1",
        "CALLPIPE_LOG_FORMAT": "json",
        "RUST_LOG": "info",
    })
    return env


def read_log(path):
    events = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    events.append({"level": "RAW", "message": line.rstrip()})
    except OSError:
        pass
    return events


def log_time(e):
    """A log line's timestamp as Unix seconds (RFC 3339, UTC, nanoseconds)."""
    from datetime import datetime, timezone
    ts = e.get("timestamp", "")
    head, _, frac = ts.rstrip("Z").partition(".")
    try:
        t = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None
    return t + (float("0." + frac) if frac else 0.0)


def empty_from_log(empty, events):
    """Each empty job's upload → ingest `started` and upload → `indexed`, from the worker's
    own log timestamps (finer than polling `calls list`)."""
    for job in empty:
        cid = job.get("call_id")
        if not cid:
            continue
        mine = [e for e in events if (e.get("span") or {}).get("call_id") == cid]
        started = next((e for e in mine if e.get("message") == "started"
                        and e["span"].get("stage") == "ingest"), None)
        indexed = next((e for e in mine if e.get("message") == "indexed"), None)
        if started and log_time(started):
            job["log_ingest_started_s"] = log_time(started) - job["uploaded_at"]
        if indexed and log_time(indexed):
            job["log_indexed_s"] = log_time(indexed) - job["uploaded_at"]


def log_findings(events):
    """Warnings and errors by message, with an example of each; any logged replica count."""
    by = {}
    replicas = None
    for e in events:
        fields = e.get("fields", {}) if isinstance(e.get("fields"), dict) else {}
        for src in (e, fields, e.get("span") or {}):
            if isinstance(src, dict) and "replicas" in src and replicas is None:
                try:
                    replicas = int(src["replicas"])
                except (TypeError, ValueError):
                    pass
        level = str(e.get("level", "")).upper()
        if level in ("WARN", "WARNING", "ERROR", "RAW"):
            msg = e.get("message") or fields.get("message") or ""
            key = (level, msg)
            if key not in by:
                by[key] = {"level": level, "message": msg, "count": 0, "example": e}
            by[key]["count"] += 1
    return sorted(by.values(), key=lambda x: -x["count"]), replicas


def run_worker(args, work, rnd, files):
    wdir = os.path.join(work, f"worker-{rnd}")
    os.makedirs(wdir)
    data = os.path.join(wdir, "data")
    servers = Servers(args, wdir)
    listen = f"127.0.0.1:{free_port()}"
    base = f"http://{listen}"
    env = worker_env(servers, listen)
    list_env = clean_env()
    proc = None
    try:
        # S3 (and moto) announce a new notification configuration with an s3:TestEvent message,
        # which the worker is to skip; it is counted, not removed.
        time.sleep(1.0)
        base_depth = servers.depth()["ingest"]
        keys = {}
        for path in files:
            key = f"calls/{os.path.basename(path)}"
            with open(path, "rb") as f:
                servers.s3.put_object(Bucket="recordings", Key=key, Body=f.read())
            keys[f"s3://recordings/{key}"] = path
        until = time.monotonic() + 30
        while servers.depth()["ingest"] < base_depth + len(files):
            if time.monotonic() > until:
                raise SystemExit(f"the ingest queue holds {servers.depth()} after {len(files)} uploads: "
                                 "no bucket notifications?")
            time.sleep(0.2)

        cmd = [args.callpipe, "--threads", str(args.threads), "--data-dir", data,
               "worker", "--stage", "all"]
        log_path = os.path.join(wdir, "worker.log")
        logf = open(log_path, "wb")
        side0 = side_cpu(servers)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=logf, env=env)
        samples, ready_s, next_sample = [], None, 0.0
        deadline = t0 + args.timeout
        calls = []
        while True:
            now = time.perf_counter() - t0
            if proc.poll() is not None:
                raise SystemExit(f"the worker exited ({proc.returncode}) before every call was "
                                 f"indexed\n{tail(log_path)}")
            if now >= next_sample:
                next_sample = now + 1.0
                if ready_s is None and http_get(base + "/healthz/ready", 1)[0] == 200:
                    ready_s = now
                d = servers.depth()
                samples.append({"t_s": now, "rss_mb": proc_status(proc.pid, "VmRSS"),
                                "load1": os.getloadavg()[0],
                                "depth": d, "total": sum(d.values()),
                                "settled": sum(1 for c in calls if c["source"] in keys and settled(c))})
            calls = list_calls(args.callpipe, data, list_env)
            done = [c for c in calls if c["source"] in keys and settled(c)]
            if len(done) >= len(keys):
                break
            if time.perf_counter() > deadline:
                raise SystemExit(f"only {len(done)} of {len(keys)} calls settled in {args.timeout} s"
                                 f"\n{tail(log_path)}")
            time.sleep(0.5)
        wall = time.perf_counter() - t0
        cpu = proc_cpu_s(proc.pid)
        side = {k: v - side0[k] for k, v in side_cpu(servers).items()}
        hwm_done = proc_status(proc.pid, "VmHWM")
        mine = [c for c in calls if c["source"] in keys]
        audio_s = sum(c.get("duration_s", 0.0) for c in mine)
        log(f"    worker: every call settled after {wall:.1f} s; idling for the engine counter")

        # The engine counter is sampled every 15 s: read it after a tick with the engine idle.
        idle_until = time.perf_counter() + 16
        while time.perf_counter() < idle_until:
            d = servers.depth()
            samples.append({"t_s": time.perf_counter() - t0, "rss_mb": proc_status(proc.pid, "VmRSS"),
                            "depth": d, "total": sum(d.values()), "settled": len(keys), "idle": True})
            time.sleep(1.0)
        _, text = http_get(base + "/metrics", 5)
        m = parse_metrics(text or "")
        busy = metric(m, "callpipe_engine_busy_seconds_total")

        # Empty jobs, one at a time, the worker warm and idle.
        silent = silent_wav()
        empty = []
        for i in range(args.empty_jobs):
            key = f"empty/silent-{i:02d}.wav"
            source = f"s3://recordings/{key}"
            t, uploaded_at = time.perf_counter(), time.time()
            servers.s3.put_object(Bucket="recordings", Key=key, Body=silent)
            while True:
                got = next((c for c in list_calls(args.callpipe, data, list_env)
                            if c["source"] == source and settled(c)), None)
                if got:
                    empty.append({"key": key, "s": time.perf_counter() - t, "uploaded_at": uploaded_at,
                                  "call_id": got["call_id"], "status": got["status"],
                                  "segments": got.get("segments"), "error": got.get("error")})
                    break
                if time.perf_counter() - t > 120:
                    empty.append({"key": key, "s": None, "status": "not settled in 120 s"})
                    break
                time.sleep(0.1)
            time.sleep(1.0)

        _, text = http_get(base + "/metrics", 5)
        m_end = parse_metrics(text or "")
        with open(os.path.join(wdir, "metrics.txt"), "w") as f:
            f.write(text or "")
        hwm_end = proc_status(proc.pid, "VmHWM")
        proc.send_signal(signal.SIGTERM)
        code, maxrss = wait_exit(proc, 120)
        logf.close()
        proc = None
        events = read_log(log_path)
        findings, logged_replicas = log_findings(events)
        # The engine's real replica count, as `run` (same binary, threads and config) reports
        # it: the worker logs only the count asked for (MKL then runs one replica with all
        # the threads).
        replicas = args.replicas_fallback
        empty_from_log(empty, events)
        depth_end = servers.depth()
        dlq = servers.dead_letters()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        servers.stop()

    counters = {
        name: {s: metric(m_end, f"callpipe_{name}_total", stage=s) for s in STAGES}
        for name in ("messages_received", "messages_acked", "messages_released", "calls_failed",
                     "messages_malformed", "messages_skipped")
    }
    return {
        "system": "worker", "round": rnd, "command": shlex.join([args.callpipe_shown] + cmd[1:]),
        "env": {k: v for k, v in env.items()
                if ("__" in k and k.startswith("CALLPIPE_")) or k == "CALLPIPE_LOG_FORMAT"
                or (k.startswith("AWS_") and k != "AWS_CA_BUNDLE") or k == "RUST_LOG"},
        "moto": shlex.join(servers.moto_cmd), "redis": shlex.join(servers.redis_cmd),
        "wall_s": wall, "ready_s": ready_s, "audio_s": audio_s, "throughput": audio_s / wall,
        "cpu_s": cpu, "side_cpu_s": side, "peak_rss_mb": hwm_done, "peak_rss_end_mb": hwm_end, "ru_maxrss_mb": maxrss,
        "exit_code": code, "replicas": replicas, "replicas_logged": logged_replicas,
        "base_depth": base_depth,
        "engine_busy_s": busy,
        "outside_engine_share": max(0.0, min(1.0, 1 - busy / (wall * replicas))),
        "calls_indexed": sum(1 for c in mine if c["status"] == "indexed"),
        "calls_failed": sum(1 for c in mine if c["status"] == "failed"),
        "failures": [{"source": c["source"], "error": c.get("error")} for c in mine if c["status"] == "failed"],
        "segments": sum(c.get("segments", 0) for c in mine),
        "samples": samples, "empty_jobs": empty, "counters": counters,
        "audio_seconds_metric": {s: metric(m, "callpipe_audio_seconds_total", stage=s) for s in STAGES},
        "queue_depth_after": depth_end, "dead_letters": dlq,
        "log_findings": findings,
        "log_lines": len(events), "log": log_path,
    }


# ---------------------------------------------------------------------------------------------
# report


def rss_table(w, rows=12):
    """About `rows` evenly spaced samples of the busy phase, plus the flatness summary."""
    busy = [s for s in w["samples"] if not s.get("idle") and s["rss_mb"] is not None]
    if not busy:
        return []
    step = max(1, len(busy) // rows)
    picked = busy[::step]
    if picked[-1] is not busy[-1]:
        picked.append(busy[-1])
    lines = [f"  {'t s':>6} {'ingest':>6} {'transcr':>7} {'index':>5} {'total':>5} {'indexed':>7} {'RSS MB':>7}"]
    for s in picked:
        d = s["depth"]
        lines.append(f"  {s['t_s']:>6.0f} {d['ingest']:>6} {d['transcribe']:>7} {d['index']:>5} "
                     f"{s['total']:>5} {s['settled']:>7} {s['rss_mb']:>7.0f}")
    return lines


def flatness(w):
    """RSS while the backlog was at least half full vs below half, after the worker was ready."""
    ready = w["ready_s"] or 0
    busy = [s for s in w["samples"] if not s.get("idle") and s["rss_mb"] is not None and s["t_s"] >= ready]
    if not busy:
        return None
    top = max(s["total"] for s in busy)
    high = [s["rss_mb"] for s in busy if s["total"] * 2 >= top]
    low = [s["rss_mb"] for s in busy if s["total"] * 2 < top]
    idle = [s["rss_mb"] for s in w["samples"] if s.get("idle") and s["rss_mb"] is not None]
    return {"max_depth": top, "rss_high_depth_max": max(high) if high else None,
            "rss_low_depth_max": max(low) if low else None,
            "rss_high_depth_median": statistics.median(high) if high else None,
            "rss_low_depth_median": statistics.median(low) if low else None,
            "rss_idle_after": idle[-1] if idle else None}


def report(args, runs, workers, files):
    n = len(files)
    audio_s = runs[0]["audio_s"]
    replicas = runs[0]["replicas"]
    med = lambda rows, k: statistics.median(r[k] for r in rows if r.get(k) is not None)  # noqa: E731
    ratio = med(workers, "throughput") / med(runs, "throughput")
    print(f"{n} calls, {audio_s / 60:.1f} min of audio, --threads {args.threads}, "
          f"{replicas} engine replicas, {len(runs)} round(s) (run, worker alternating)")
    print(f"{'system':<16} {'round':>5} {'wall s':>7} {'audio s/wall s':>14} {'CPU s':>7} "
          f"{'peak RSS MB':>11} {'outside engine':>14} {'indexed':>7} {'failed':>6}")
    for r in sorted(runs + workers, key=lambda r: (r["round"], r["system"] != "run")):
        name = "callpipe run" if r["system"] == "run" else "callpipe worker"
        cpu = f"{r['cpu_s']:>7.1f}" if r.get("cpu_s") is not None else f"{'':>7}"
        print(f"{name:<16} {r['round']:>5} {r['wall_s']:>7.1f} {r['throughput']:>14.2f} {cpu} "
              f"{r['peak_rss_mb']:>11.0f} {r['outside_engine_share'] * 100:>13.1f}% "
              f"{r['calls_indexed']:>7} {r['calls_failed']:>6}")
    verdict = "met" if ratio >= GOAL else "NOT met"
    print(f"worker / run throughput: {ratio:.3f} (medians over rounds; goal >= {GOAL}: {verdict})")
    print(f"peak RSS: run {med(runs, 'peak_rss_mb'):.0f} MB, worker {med(workers, 'peak_rss_mb'):.0f} MB "
          f"when the last call was indexed ({med(workers, 'peak_rss_end_mb'):.0f} MB VmHWM before SIGTERM, "
          f"{med(workers, 'ru_maxrss_mb'):.0f} MB ru_maxrss at exit)")
    print(f"outside engine: run {med(runs, 'outside_engine_share') * 100:.1f}%, worker "
          f"{med(workers, 'outside_engine_share') * 100:.1f}% of wall x replicas "
          f"(engine busy: run {med(runs, 'engine_busy_s'):.1f} s, worker {med(workers, 'engine_busy_s'):.1f} s)")
    for w in workers:
        sc = w["side_cpu_s"]
        print(f"beside the worker in round {w['round']} (same cores, timed run): moto {sc['moto']:.1f} CPU s, "
              f"redis {sc['redis']:.1f}, this bench's polling {sc['calls_list']:.1f} (`calls list`) + "
              f"{sc['bench']:.1f} (boto3, /proc) = {sum(sc.values()):.1f} CPU s "
              f"of {w['wall_s'] * os.cpu_count():.0f} available")
    print(f"worker ready (models loaded, /healthz/ready 200) after {med(workers, 'ready_s'):.1f} s")
    empty = [e for w in workers for e in w["empty_jobs"]]
    times = [e["s"] for e in empty if e["s"] is not None]
    statuses = {}
    for e in empty:
        statuses[e["status"]] = statuses.get(e["status"], 0) + 1
    if times:
        print(f"empty job (1 s silent WAV, upload → indexed, warm idle worker): n={len(times)}, "
              f"median {statistics.median(times):.2f} s, p90 {percentile(times, 90):.2f} s, "
              f"min {min(times):.2f} s, max {max(times):.2f} s; ended "
              + ", ".join(f"{k} x{v}" for k, v in statuses.items()))
    logged = [e["log_indexed_s"] for e in empty if e.get("log_indexed_s") is not None]
    picked = [e["log_ingest_started_s"] for e in empty if e.get("log_ingest_started_s") is not None]
    if logged:
        print(f"  from the worker's log: upload → indexed median {statistics.median(logged):.3f} s, "
              f"p90 {percentile(logged, 90):.3f} s; upload → ingest started median "
              f"{statistics.median(picked):.3f} s (polling `calls list` every 0.1 s adds the rest)")
    for e in empty:
        if e["status"] != "indexed" or e.get("segments"):
            print(f"  empty job {e['key']}: {e['status']}, segments {e.get('segments')}, error {e.get('error')}")
            break
    for w in workers:
        print(f"worker round {w['round']}: RSS against queue depth (visible + in flight, all three queues)")
        for line in rss_table(w):
            print(line)
        f = flatness(w)
        if f:
            w["flatness"] = f
            print(f"  after ready: RSS max {f['rss_high_depth_max']:.0f} MB (median "
                  f"{f['rss_high_depth_median']:.0f}) while >= half of the {f['max_depth']} messages waited, "
                  + (f"max {f['rss_low_depth_max']:.0f} MB (median {f['rss_low_depth_median']:.0f}) below half"
                     if f["rss_low_depth_max"] else "no samples below half")
                  + (f"; {f['rss_idle_after']:.0f} MB idle after" if f["rss_idle_after"] else ""))
        c = w["counters"]
        print(f"  messages received/acked/released: "
              + ", ".join(f"{s} {c['messages_received'][s]:.0f}/{c['messages_acked'][s]:.0f}/"
                          f"{c['messages_released'][s]:.0f}" for s in STAGES)
              + f"; calls failed {sum(c['calls_failed'].values()):.0f}; left in queues {w['queue_depth_after']}; "
              f"dead letters {w['dead_letters']}; exit {w['exit_code']}")
        if w["replicas_logged"] is not None and w["replicas_logged"] != w["replicas"]:
            print(f"  replicas: the worker logs replicas={w['replicas_logged']} (asked for); the engine "
                  f"runs {w['replicas']} (run summary), which the outside-engine share uses")
        if w["base_depth"]:
            print(f"  {w['base_depth']} message(s) waited before the uploads (s3:TestEvent); "
                  f"skipped by the worker: {sum(w['counters']['messages_skipped'].values()):.0f}")
        if w["log_findings"]:
            where = w["log"] if args.keep else "--keep keeps it"
            print(f"  worker log ({w['log_lines']} lines, {where}): warnings and errors by message")
            for f in w["log_findings"][:10]:
                ex = json.dumps(f["example"])[:300]
                print(f"    {f['count']:>4} x {f['level']:<5} {f['message']!r}  e.g. {ex}")
        else:
            print(f"  worker log ({w['log_lines']} lines): no warnings or errors")
    for r in runs + workers:
        if r["failures"]:
            print(f"{r['system']} round {r['round']} failures: {r['failures']}")
    print("commands:")
    print(f"  run:    {runs[0]['command']}")
    w = workers[0]
    print(f"  moto:   {w['moto']}")
    print(f"  redis:  {w['redis']}")
    print(f"  worker: {' '.join(f'{k}={shlex.quote(v)}' for k, v in sorted(w['env'].items()))} \\")
    print(f"          {w['command']}")
    print(f"  done:   callpipe --data-dir DATA calls list --json, every 0.5 s, until all {n} calls are indexed")
    return ratio


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--callpipe", required=True)
    ap.add_argument("--moto-server", default=os.environ.get("CALLPIPE_MOTO_SERVER", "moto_server"))
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("--threads", type=int, default=2, help="--threads for both sides")
    ap.add_argument("--runs", type=int, default=1, help="rounds of (run, worker)")
    ap.add_argument("--empty-jobs", type=int, default=10, help="silent uploads timed per worker round")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds the worker may take")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    ap.add_argument("--json", metavar="FILE", help="also write every number here")
    ap.add_argument("calls_dir", help="a folder of .wav calls (scripts/make_call.py's output)")
    args = ap.parse_args()
    args.calls_dir = os.path.abspath(args.calls_dir)
    files = sorted(os.path.join(args.calls_dir, f) for f in os.listdir(args.calls_dir) if f.endswith(".wav"))
    if not files:
        raise SystemExit(f"no .wav files in {args.calls_dir}")

    work = tempfile.mkdtemp(prefix="callpipe-workers-")
    # A frozen copy: a concurrent `cargo build` may replace the binary between rounds.
    binary = os.path.join(work, "callpipe")
    shutil.copy2(args.callpipe, binary)
    args.callpipe_shown, args.callpipe = args.callpipe, binary
    runs, workers = [], []
    load_start = os.getloadavg()
    try:
        for rnd in range(1, args.runs + 1):
            log(f"  round {rnd}: callpipe run")
            r = run_inprocess(args, work, rnd)
            runs.append(r)
            log(f"    run: {r['wall_s']:.1f} s, {r['throughput']:.2f} audio s/wall s, "
                f"{r['peak_rss_mb']:.0f} MB")
            args.replicas_fallback = r["replicas"]
            log(f"  round {rnd}: callpipe worker --stage all")
            w = run_worker(args, work, rnd, files)
            workers.append(w)
            log(f"    worker: {w['wall_s']:.1f} s, {w['throughput']:.2f} audio s/wall s, "
                f"{w['peak_rss_mb']:.0f} MB")
        try:
            load = os.getloadavg()
        except OSError:
            load = None
        ratio = report(args, runs, workers, files)
        if load:
            print(f"load average (1, 5, 15 min) at the start: {' '.join(f'{x:.2f}' for x in load_start)}, "
                  f"at the end: {' '.join(f'{x:.2f}' for x in load)}, on {os.cpu_count()} CPUs "
                  "(above the bench's own ~threads means other work shared the machine)")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"threads": args.threads, "calls": len(files), "calls_dir": args.calls_dir,
                           "ratio": ratio, "goal": GOAL, "load_average": load,
                           "load_average_start": load_start,
                           "runs": runs, "workers": workers}, f, indent=1)
    finally:
        if args.keep:
            log(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
