"""redis_snapshot and redis_restore against real redis-server instances, each test with its own dir and port.

The restore tests restart Redis through ``start_command`` (the argv ``services.start_redis`` used), since
there is no systemd here; the ``service`` path (systemctl) is not exercised by these tests.
"""

import json
import os
import struct
import subprocess

import pytest
import redis
import services
from harness import REPO, dr_report, module_env, run_module, run_playbook
from test_playbooks import ArgvWatch

from ansible_collections.caas.backup.plugins.module_utils.catalog import SetWriter, list_sets
from ansible_collections.caas.backup.plugins.module_utils.redis_backup import crc64
from ansible_collections.caas.backup.plugins.module_utils.storage import LocalStorage
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

PASSWORD = "s3cret-redis-pass"


class Instance:
    """A redis-server of one test; the restore may replace its process, so stop() asks the server its pid."""

    def __init__(self, tmp_path, name="redis", **conf):
        self.handle = services.start_redis(tmp_path / name, extra_conf=conf or None)
        self.password = conf.get("requirepass")
        self.port = self.handle.port

    def client(self):
        return redis.Redis(port=self.port, password=self.password, decode_responses=True, socket_timeout=10)

    def args(self, **more):
        args = dict(login_port=self.port)
        if self.password:
            args["login_password"] = self.password
        return dict(args, **more)

    def pid(self):
        return int(self.client().info("server")["process_id"])

    def stop(self):
        try:
            pid = self.pid()
        except redis.RedisError:
            pid = None
        self.handle.stop()
        if pid and pid != self.handle.pid:
            services.stop_pid(pid)


@pytest.fixture()
def instances(tmp_path):
    started = []

    def start(name="redis", **conf):
        inst = Instance(tmp_path, name, **conf)
        started.append(inst)
        return inst

    yield start
    for inst in started:
        inst.stop()


@pytest.fixture()
def env():
    return module_env({})


@pytest.fixture()
def storage_url(tmp_path):
    path = tmp_path / "backups"
    path.mkdir()
    return f"file://{path}"


def fill(client):
    """One key of every type, some with a TTL."""
    client.set("string", "value", ex=3600)
    client.set("plain", "no ttl")
    client.hset("hash", mapping={"a": "1", "b": "2"})
    client.expire("hash", 7200)
    client.rpush("list", "x", "y", "z")
    client.sadd("set", "m1", "m2")
    client.zadd("zset", {"one": 1.0, "two": 2.5})
    client.pexpire("zset", 9_000_000)
    client.xadd("stream", {"f": "v"}, id="1-1")
    client.xadd("stream", {"f": "w"}, id="2-1")
    client.xgroup_create("stream", "readers", id="0")
    client.expire("stream", 5000)
    client.select(3)
    client.set("in-db3", "yes")
    client.select(0)


def contents(client):
    """Every key with its type, value and whether it has a TTL, for comparison."""
    seen = {}
    for db in (0, 3):
        client.select(db)
        for key in client.keys("*"):
            kind = client.type(key)
            value = {
                "string": client.get,
                "hash": client.hgetall,
                "list": lambda k: client.lrange(k, 0, -1),
                "set": lambda k: sorted(client.smembers(k)),
                "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
                "stream": lambda k: [client.xrange(k), [g["name"] for g in client.xinfo_groups(k)]],
            }[kind](key)
            seen[(db, key)] = (kind, value, client.pttl(key) > 0)
    client.select(0)
    return seen


def change(client):
    client.flushall()
    client.set("after-backup", "must go away")


def snapshot(env, inst, storage_url, **args):
    result = run_module("redis_snapshot", dict(inst.args(), storage_url=storage_url, **args), env)
    assert result["rc"] == 0, result
    return result


def restore(env, inst, storage_url, check_mode=False, **args):
    start = services.redis_start_command(inst.handle)
    return run_module(
        "redis_restore", dict(inst.args(), start_command=start, storage_url=storage_url, **args), env, check_mode
    )


@pytest.mark.parametrize("method", ["bgsave", "replication"])
@pytest.mark.parametrize("appendonly", ["yes", "no"])
def test_rdb_round_trip_keeps_every_type_and_ttl(instances, env, storage_url, method, appendonly):
    """Snapshot by BGSAVE and by replication fetch; restore into Redis with AOF on and off."""
    inst = instances(appendonly=appendonly)
    client = inst.client()
    fill(client)
    expected = contents(client)
    result = snapshot(env, inst, storage_url, method=method)
    facts = result["facts"]
    assert facts["rdb_version"] == 10 and facts["redis_version"].startswith("7.")
    assert facts["keys"] == 8 and facts["expires"] == 4 and facts["keys_exact"]
    assert facts["keys_per_db"] == {"0": {"keys": 7, "expires": 4}, "3": {"keys": 1, "expires": 0}}
    assert len(facts["crc64"]) == 16
    change(client)

    result = restore(env, inst, storage_url)
    assert result["rc"] == 0, result
    assert result["keys"] == 8
    assert result["target"] == f"redis://127.0.0.1:{inst.port}"
    assert contents(inst.client()) == expected
    assert inst.client().config_get("appendonly")["appendonly"] == appendonly
    if appendonly == "yes":
        # The AOF was rewritten from the restored data: a restart that loads only the AOF gives it back.
        assert "appendonly yes" in (inst.handle.dir / "redis.conf").read_text()
        inst.client().shutdown(nosave=True)
        inst.handle = services._spawn(
            "redis",
            services.redis_start_command(inst.handle),
            inst.handle.dir,
            inst.port,
            f"redis://127.0.0.1:{inst.port}/0",
            30,
        )
        assert contents(inst.client()) == expected
    assert not [p for p in os.listdir(inst.handle.dir) if p.startswith(".caas-")]


def test_aof_snapshot_and_restore(instances, env, storage_url):
    """aof: true copies the multi-part AOF; mode aof puts it back and Redis loads it."""
    inst = instances()
    client = inst.client()
    fill(client)
    client.bgrewriteaof()
    client.set("in-increment", "after the rewrite")
    expected = contents(client)
    result = snapshot(env, inst, storage_url, aof=True)
    assert result["kind"] == "redis-aof"
    assert any(name.endswith(".base.rdb") for name in result["facts"]["aof_files"])
    assert client.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"] == "100"
    change(client)
    result = restore(env, inst, storage_url, mode="aof")
    assert result["rc"] == 0, result
    assert contents(inst.client()) == expected


def test_encrypted_snapshot_to_s3_and_check_mode_restore(instances, svc, s3_url, age_key):
    """An encrypted set on S3; check mode checks it and returns the plan, touching nothing."""
    env = module_env(svc)
    inst = instances()
    fill(inst.client())
    snapshot(env, inst, s3_url, method="replication", encryption_recipients=[age_key["recipient"]])
    change(inst.client())
    pid = inst.pid()
    result = restore(env, inst, s3_url, check_mode=True, encryption_identity_file=age_key["file"])
    assert result["rc"] == 0, result
    assert any("appendonly no" in step for step in result["plan"])
    assert result["backup_facts"]["crc64"]
    assert inst.pid() == pid and inst.client().get("after-backup") == "must go away"
    result = restore(env, inst, s3_url, encryption_identity_file=age_key["file"])
    assert result["rc"] == 0, result
    assert inst.client().get("after-backup") is None and inst.client().dbsize() == 7


def put_set(storage_url, rdb, facts, kind="redis-rdb"):
    """A backup set holding ``rdb`` as it is (its sha256 matches: only the RDB checks can catch it)."""
    storage = LocalStorage(storage_url[len("file://") :])
    writer = SetWriter(storage, kind, "crafted", WriteOptions("none"))
    with writer.object("dump.rdb") as out:
        out.write(rdb)
    writer.commit(facts)
    return writer.backup_id


def real_rdb(instances, env, storage_url):
    """The RDB bytes and facts of a real snapshot."""
    source = instances("source")
    fill(source.client())
    snapshot(env, source, storage_url, compression="none", source_name="real")
    storage = LocalStorage(storage_url[len("file://") :])
    bset = [s for s in list_sets(storage, "redis-rdb") if s.source == "real"][0]
    return storage.get_bytes(f"{bset.prefix}/dump.rdb"), bset.facts


def assert_untouched(inst, pid):
    client = inst.client()
    assert client.ping() and inst.pid() == pid
    assert client.get("after-backup") == "must go away" and client.dbsize() == 1


def with_crc(body):
    return body + struct.pack("<Q", crc64(body))


@pytest.mark.parametrize("damage", ["truncated", "bit flip", "newer rdb version", "not an rdb", "bad structure"])
def test_bad_rdb_is_refused_before_anything_is_touched(instances, env, storage_url, damage):
    """Each bad file fails with a clear error; Redis keeps running (same process) with its data."""
    rdb, facts = real_rdb(instances, env, storage_url)
    bad = {
        "truncated": rdb[: len(rdb) // 2],
        "bit flip": rdb[:40] + bytes([rdb[40] ^ 0x10]) + rdb[41:],
        "newer rdb version": with_crc(b"REDIS0099" + rdb[9:-8]),
        "not an rdb": b"not an rdb file at all",
        # A valid CRC over a body whose first opcode is nonsense: only redis-check-rdb sees it.
        "bad structure": with_crc(b"REDIS0010" + b"\x42" * 30 + b"\xff"),
    }[damage]
    backup_id = put_set(storage_url, bad, facts)
    inst = instances()
    change(inst.client())
    pid = inst.pid()
    result = restore(env, inst, storage_url, backup_id=backup_id, source_name="crafted")
    assert result["rc"] == 1 and result["msg"].startswith("Failed to restore Redis: ")
    expected = {
        "truncated": "truncated",
        "bit flip": "corrupted",
        "newer rdb version": "from a newer Redis than the target",
        "not an rdb": "is not an RDB file",
        "bad structure": "redis-check-rdb refuses the backup",
    }[damage]
    assert expected in result["msg"]
    assert_untouched(inst, pid)


@pytest.mark.parametrize("appendonly", ["yes", "no"])
def test_failed_restore_rolls_back(instances, env, storage_url, appendonly):
    """A backup whose key count does not match its manifest: Redis loads it, the check fails, the old data
    is put back and Redis runs again (a new process, same data and settings)."""
    rdb, facts = real_rdb(instances, env, storage_url)
    backup_id = put_set(storage_url, rdb, dict(facts, keys=999, expires=0))
    inst = instances(appendonly=appendonly)
    change(inst.client())
    conf_before = (inst.handle.dir / "redis.conf").read_text()
    result = restore(env, inst, storage_url, backup_id=backup_id, source_name="crafted")
    assert result["rc"] == 1, result
    assert "manifest says 999" in result["msg"]
    assert "the previous data was put back and Redis is running again" in result["msg"]
    client = inst.client()
    assert client.get("after-backup") == "must go away" and client.dbsize() == 1
    assert client.config_get("appendonly")["appendonly"] == appendonly
    assert (inst.handle.dir / "redis.conf").read_text() == conf_before
    assert not [p for p in os.listdir(inst.handle.dir) if p.startswith(".caas-")]


def test_wrong_password_and_acl_user(instances, env, storage_url):
    """AUTH with a wrong password fails clearly for both methods; the right one works (also for replication)."""
    inst = instances(requirepass=PASSWORD)
    fill(inst.client())
    for method in ("bgsave", "replication"):
        result = run_module(
            "redis_snapshot",
            dict(storage_url=storage_url, login_port=inst.port, login_password="wrong", method=method),
            env,
        )
        assert result["rc"] == 1 and "refused the credentials" in result["msg"], result
        assert "wrong" not in json.dumps({k: v for k, v in result.items() if k != "invocation"})
    result = snapshot(env, inst, storage_url, method="replication")
    assert PASSWORD not in json.dumps(result)
    inst.client().acl_setuser("backup", enabled=True, passwords=[f"+{PASSWORD}x"], commands=["+@all"], keys="*")
    result = run_module(
        "redis_snapshot",
        dict(
            storage_url=storage_url,
            url=f"redis://backup@127.0.0.1:{inst.port}",
            login_password=f"{PASSWORD}x",
            method="replication",
        ),
        dict(env),
    )
    assert result["rc"] == 0, result


def test_password_in_url_is_refused_and_masked(env, storage_url, tmp_path):
    """A password inside url is refused, and appears nowhere: not in the result (its ``invocation`` with -v)
    nor in the output of ``ansible-playbook -vvv``."""
    secret = "url-pw-do-not-leak-5e1"
    for module in ("redis_snapshot", "redis_restore"):
        for written in (secret, secret.replace("-", "%2D")):
            url = f"redis://user:{written}@127.0.0.1:1"
            args = dict(storage_url=storage_url, url=url)
            if module == "redis_restore":
                args["start_command"] = ["redis-server"]
            result = run_module(module, args, env)
            assert result["rc"] == 1 and "must not hold a password" in result["msg"], result
            assert secret not in json.dumps(result) and written not in json.dumps(result)
            # An argument spec error returns the options too: they are masked as well.
            result = run_module(module, dict(args, no_such_option=1), env)
            assert result["rc"] == 1 and "Unsupported parameters" in result["msg"], result
            assert secret not in json.dumps(result) and written not in json.dumps(result)
    playbook = tmp_path / "leak.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - caas.backup.redis_snapshot:\n"
        f"        storage_url: {storage_url}\n"
        f"        url: redis://:{secret}@127.0.0.1:1\n"
        "      ignore_errors: true\n"
    )
    proc = run_playbook(playbook, {}, env, "-vvv")
    assert "must not hold a password" in proc.stdout, proc.stdout[-2000:]
    assert secret not in proc.stdout + proc.stderr


def test_redis_not_running(env, storage_url):
    port = services.free_port()
    for module, args in (
        ("redis_snapshot", {}),
        ("redis_restore", {"start_command": ["redis-server"]}),
    ):
        result = run_module(module, dict(storage_url=storage_url, login_port=port, connect_timeout=2, **args), env)
        assert result["rc"] == 1 and "is not running or cannot be reached" in result["msg"], result


def test_backup_and_dr_playbooks_restore_redis(instances, svc, s3_url, age_key, tmp_path):
    """backup.yml and dr.yml on a host in caas_redis: the data comes back but for a key erased after the backup
    (the erasure ledger, applied by redis_restore; the report counts it), the report has the Redis backup time
    as its data time and the key count checked, and the password shows up in no argv and no output."""
    inst = instances(requirepass=PASSWORD)
    fill(inst.client())
    expected = {k: v for k, v in contents(inst.client()).items() if k != (0, "plain")}
    reports = tmp_path / "reports"
    extra = {
        "caas_backup_storage_url": s3_url,
        "caas_backup_s3_endpoint_url": svc["CAAS_S3_ENDPOINT"],
        "caas_backup_encryption_recipients": [age_key["recipient"]],
        "caas_backup_encryption_identity_file": age_key["file"],
        "redis_backup_login_port": inst.port,
        "redis_backup_start_command": services.redis_start_command(inst.handle),
        "dr_site_report_dir": str(reports),
    }
    env = module_env(svc, REDIS_PASSWORD=PASSWORD)
    with ArgvWatch([PASSWORD]) as watch:
        backup = run_playbook(REPO / "playbooks" / "backup.yml", extra, env, "-v", groups=["caas_redis"])
        assert backup.returncode == 0, backup.stdout + backup.stderr
        erase = dict(
            storage_url=s3_url, encryption_recipients=[age_key["recipient"]], requested_by="dpo", reason="GDPR-7"
        )
        assert run_module("backup_erasure", dict(erase, redis=["plain"]), env)["rc"] == 0
        change(inst.client())
        dr = run_playbook(REPO / "playbooks" / "dr.yml", extra, env, "-v", groups=["caas_redis"])
        assert dr.returncode == 0, dr.stdout + dr.stderr
    assert watch.samples > 5 and watch.found == [], watch.found
    assert contents(inst.client()) == expected
    measured = dr_report(reports)
    [redis] = measured["components"]
    assert (redis["component"], redis["source"], redis["status"]) == ("redis", "localhost", "PASS")
    assert redis["data_time"] == redis["backup_time"] and redis["checks"][0]["found"] == len(expected)
    assert redis["erased"] == 1
    for output in (backup.stdout, backup.stderr, dr.stdout, dr.stderr):
        assert PASSWORD not in output


def test_tls_snapshot_both_methods_and_restore(instances, env, storage_url, tmp_path):
    """rediss:// with a CA file: redis-py for BGSAVE and restore, the raw TLS socket for the replication fetch."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    tls_port = services.free_port()
    inst = instances(
        **{
            "tls-port": str(tls_port),
            "tls-cert-file": str(cert),
            "tls-key-file": str(key),
            "tls-ca-cert-file": str(cert),
            "tls-auth-clients": "no",
            "tls-replication": "yes",
        }
    )
    fill(inst.client())
    expected = contents(inst.client())
    tls = dict(url=f"rediss://127.0.0.1:{tls_port}", tls_ca_cert=str(cert))
    for method in ("bgsave", "replication"):
        result = run_module("redis_snapshot", dict(tls, storage_url=storage_url, method=method), env)
        assert result["rc"] == 0, result
    change(inst.client())
    start = services.redis_start_command(inst.handle)
    result = run_module("redis_restore", dict(tls, storage_url=storage_url, start_command=start), env)
    assert result["rc"] == 0, result
    assert contents(inst.client()) == expected
    result = run_module("redis_snapshot", dict(url=f"rediss://127.0.0.1:{tls_port}", storage_url=storage_url), env)
    assert result["rc"] == 1 and "CERTIFICATE_VERIFY_FAILED" in result["msg"], result


def test_bgsave_reuses_a_recent_save_and_diskless_replication(instances, env, storage_url):
    """max_age reuses the last save (and then claims no exact counts); diskless fetch reads the $EOF: form."""
    inst = instances(**{"repl-diskless-sync": "yes", "repl-diskless-sync-delay": "0"})
    fill(inst.client())
    first = snapshot(env, inst, storage_url)
    assert not first["reused_save"] and first["facts"]["keys_exact"]
    again = snapshot(env, inst, storage_url, max_age=3600)
    assert again["reused_save"] and not again["facts"]["keys_exact"]
    assert again["facts"]["crc64"] == first["facts"]["crc64"]
    diskless = snapshot(env, inst, storage_url, method="replication", diskless=True)
    assert diskless["facts"]["keys"] == 8 and diskless["facts"]["rdb_version"] == 10


def test_restore_with_a_wrong_password_touches_nothing(instances, env, storage_url):
    inst = instances(requirepass=PASSWORD)
    fill(inst.client())
    snapshot(env, inst, storage_url)
    change(inst.client())
    pid = inst.pid()
    result = restore(env, inst, storage_url, login_password="wrong")
    assert result["rc"] == 1 and "refused the credentials" in result["msg"], result
    assert_untouched(inst, pid)


def fake_systemctl(env, tmp_path, inst, start, is_failed):
    """A stand-in systemctl first on PATH: stop is SHUTDOWN NOSAVE, start and is-failed run the given shell;
    ``{argv}`` in ``start`` is the instance's redis-server command. Returns the module environment."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    argv = " ".join(services.redis_start_command(inst.handle)) + " >/dev/null 2>&1 </dev/null"
    (bindir / "systemctl").write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  stop) echo "$*" >> {tmp_path}/systemctl.calls\n'
        f"        redis-cli -p {inst.port} shutdown nosave >/dev/null 2>&1; true ;;\n"
        f"  start) {start.replace('{argv}', argv)} ;;\n"
        f"  is-failed) {is_failed} ;;\n"
        "esac\n"
    )
    (bindir / "systemctl").chmod(0o755)
    return dict(env, PATH=f"{bindir}:{env['PATH']}")


def test_restore_through_a_service_unit(instances, env, storage_url, tmp_path):
    """The service path, with a stand-in systemctl first on PATH (there is no systemd here): it stops Redis with
    SHUTDOWN NOSAVE and starts the same redis-server; the module edits the config file for appendonly no,
    and CONFIG REWRITE turns it back on."""
    inst = instances()
    fill(inst.client())
    expected = contents(inst.client())
    snapshot(env, inst, storage_url)
    change(inst.client())
    calls = tmp_path / "systemctl.calls"
    service_env = fake_systemctl(env, tmp_path, inst, f'echo "$*" >> {calls}; setsid {{argv}} &', "exit 1")
    result = run_module(
        "redis_restore", dict(inst.args(), storage_url=storage_url, service="redis-test.service"), service_env
    )
    assert result["rc"] == 0, result
    called = [line for line in calls.read_text().splitlines() if not line.startswith("is-failed")]
    assert called == ["stop redis-test.service", "start redis-test.service"]
    assert contents(inst.client()) == expected
    assert inst.client().config_get("appendonly")["appendonly"] == "yes"
    assert "appendonly yes" in (inst.handle.dir / "redis.conf").read_text()


def test_restore_without_a_config_file(env, storage_url, tmp_path):
    """A Redis started with options only: the module starts it with --appendonly no appended to start_command
    (a later option wins), then turns the AOF on with CONFIG SET; there is no file to CONFIG REWRITE."""
    port = services.free_port()
    data = tmp_path / "bare"
    argv = [
        services.binary("redis-server"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--appendonly",
        "yes",
        "--save",
        "",
    ]
    handle = services._spawn("redis", argv, data, port, f"redis://127.0.0.1:{port}/0", 30)
    client = redis.Redis(port=port, decode_responses=True)
    try:
        fill(client)
        expected = contents(client)
        assert run_module("redis_snapshot", dict(storage_url=storage_url, login_port=port), env)["rc"] == 0
        change(client)
        result = run_module("redis_restore", dict(storage_url=storage_url, login_port=port, start_command=argv), env)
        assert result["rc"] == 0, result
        assert not any("CONFIG REWRITE" in step for step in result["steps"])
        assert contents(client) == expected
        assert client.config_get("appendonly")["appendonly"] == "yes"
    finally:
        pid = int(client.info("server")["process_id"])
        handle.stop()
        services.stop_pid(pid)


def test_stock_tools_open_a_snapshot(instances, env, storage_url, age_key, tmp_path):
    """The disaster path without the collection: age -d | zstd -d gives an RDB that redis-check-rdb accepts."""
    inst = instances()
    fill(inst.client())
    made = snapshot(env, inst, storage_url, encryption_recipients=[age_key["recipient"]])
    stored = made["location"][len("file://") :] + "/dump.rdb.zst.age"
    rdb = tmp_path / "dump.rdb"
    with open(rdb, "wb") as out:
        age = subprocess.Popen(["age", "-d", "-i", age_key["file"], stored], stdout=subprocess.PIPE)
        subprocess.run(["zstd", "-d", "-q"], stdin=age.stdout, stdout=out, check=True)
        assert age.wait() == 0
    check = subprocess.run(["redis-check-rdb", str(rdb)], capture_output=True, text=True, check=False)
    assert check.returncode == 0 and "RDB looks OK" in check.stdout, check.stdout
    assert rdb.stat().st_size == made["facts"]["rdb_size"]


def test_a_unit_that_fails_to_start_is_rolled_back(instances, env, storage_url, tmp_path):
    """The stand-in systemctl's first start fails (the unit is "failed"); the module stops waiting at once,
    puts the old data back, and its second start brings Redis up with it."""
    inst = instances()
    fill(inst.client())
    snapshot(env, inst, storage_url)
    change(inst.client())
    starts = tmp_path / "starts"
    service_env = fake_systemctl(
        env,
        tmp_path,
        inst,
        f"echo x >> {starts}; [ $(wc -l < {starts}) -ge 2 ] && setsid {{argv}} &",  # the first start fails
        f"[ $(wc -l < {starts}) -lt 2 ]",
    )
    result = run_module(
        "redis_restore", dict(inst.args(), storage_url=storage_url, service="redis-test.service"), service_env
    )
    assert result["rc"] == 1, result
    assert "redis-test.service failed while starting" in result["msg"]
    assert "the previous data was put back and Redis is running again" in result["msg"]
    assert inst.client().get("after-backup") == "must go away" and inst.client().dbsize() == 1


@pytest.mark.parametrize("aof", [False, True])
def test_backup_verify_checks_and_test_restores_redis_snapshots(instances, env, storage_url, aof):
    """backup_verify: the RDB (or AOF) is checked, then loaded into a scratch redis-server on a unix socket."""
    inst = instances()
    fill(inst.client())
    if aof:
        inst.client().bgrewriteaof()
    snapshot(env, inst, storage_url, aof=aof)
    for level in ("checksum", "restore"):
        result = run_module("backup_verify", {"storage_url": storage_url, "level": level}, env)
        assert result["rc"] == 0, result
        [report] = result["reports"]
        assert report["ok"] and report["kind"] == ("redis-aof" if aof else "redis-rdb")
        if level == "restore":
            assert report["checks"][-1]["keys"] == 8  # fill() makes 8 keys in two databases


def test_backup_verify_catches_a_key_count_the_rdb_does_not_hold(instances, env, storage_url):
    """A manifest promising more keys than the RDB holds fails the test restore (the RDB itself is valid)."""
    rdb, facts = real_rdb(instances, env, storage_url)
    put_set(storage_url, rdb, dict(facts, keys=50, expires=0))
    result = run_module(
        "backup_verify", {"storage_url": storage_url, "level": "restore", "source_name": "crafted"}, env
    )
    assert result["rc"] == 1
    assert "a scratch Redis loaded 8 keys but the manifest says 50" in result["msg"]


def stored_objects(url):
    """Every object of a file:// storage with its size: what check mode must leave as it was."""
    root = url[len("file://") :]
    return sorted(
        (os.path.relpath(os.path.join(d, f), root), os.path.getsize(os.path.join(d, f)))
        for d, _dirs, files in os.walk(root)
        for f in files
    )


@pytest.mark.parametrize("method", ["bgsave", "replication"])
def test_snapshot_and_restore_check_mode_report_the_plan_and_write_nothing(instances, env, storage_url, method):
    """redis_snapshot in check mode: changed, the method, the key count a real snapshot then records, the default
    source from the configured host and port; no save is made (LASTSAVE unchanged) and nothing is stored.
    redis_restore in check mode: changed, the set it would restore; Redis keeps its process and its data."""
    inst = instances()
    client = inst.client()
    fill(client)
    last_save = client.lastsave()
    planned = run_module("redis_snapshot", dict(inst.args(), storage_url=storage_url, method=method), env, True)
    assert planned["rc"] == 0, planned
    assert planned["changed"] is True and planned["backup_id"] == "" and planned["method"] == method
    assert planned["source"] == f"127.0.0.1-{inst.port}" and planned["kind"] == "redis-rdb"
    assert planned["location"] == f"{storage_url}/redis-rdb/127.0.0.1-{inst.port}/"
    sizes = []
    for db in (0, 3):
        client.select(db)
        sizes.append(client.dbsize())
    client.select(0)
    assert planned["facts"]["keys"] == sum(sizes) == 8 and "of 8 key(s) in 2 database(s)" in planned["msg"]
    assert client.lastsave() == last_save and stored_objects(storage_url) == []

    made = snapshot(env, inst, storage_url, method=method)
    assert made["facts"]["keys"] == planned["facts"]["keys"] and made["source"] == planned["source"]
    change(client)
    before, pid = stored_objects(storage_url), inst.pid()
    plan = restore(env, inst, storage_url, check_mode=True)
    assert plan["rc"] == 0, plan
    assert plan["changed"] is True and plan["backup_id"] == made["backup_id"] and "steps" not in plan
    assert plan["msg"].startswith(f"would restore redis-rdb backup {made['backup_id']} of 127.0.0.1-{inst.port}")
    assert "8 keys" in plan["msg"]
    assert stored_objects(storage_url) == before
    assert inst.pid() == pid and inst.client().get("after-backup") == "must go away"


def test_restore_on_a_new_host_names_the_sources_that_have_backups(instances, env, storage_url):
    """DR onto a new host: a source name with no backups fails naming those that exist, and changes nothing."""
    inst = instances()
    fill(inst.client())
    snapshot(env, inst, storage_url, source_name="cache02")
    snapshot(env, inst, storage_url, source_name="cache01")
    change(inst.client())
    failed = restore(env, inst, storage_url, source_name="dr-cache")
    assert failed["rc"] == 1
    assert failed["msg"] == (
        f"Failed to restore Redis: no complete redis-rdb backup for source dr-cache in {storage_url}; "
        "sources with redis-rdb backups: cache01, cache02"
    )
    assert inst.client().get("after-backup") == "must go away"


@pytest.mark.parametrize("broken", ["missing binary", "not executable", "not on PATH", "unknown unit"])
def test_a_restart_that_cannot_work_is_refused_before_redis_is_stopped(instances, env, storage_url, tmp_path, broken):
    """A start_command that cannot run (or a unit systemd does not know) fails before the stop: Redis keeps
    running, same process, same data; check mode says so too."""
    inst = instances()
    fill(inst.client())
    snapshot(env, inst, storage_url)
    change(inst.client())
    pid = inst.pid()
    script = tmp_path / "redis-start.sh"
    script.write_text('#!/bin/sh\nexec redis-server "$@"\n')
    script.chmod(0o644)
    args = dict(inst.args(), storage_url=storage_url)
    run_env = env
    if broken == "unknown unit":
        bindir = tmp_path / "bin"
        bindir.mkdir()
        (bindir / "systemctl").write_text('#!/bin/sh\necho "Unit $2 could not be found." >&2\nexit 1\n')
        (bindir / "systemctl").chmod(0o755)
        run_env = dict(env, PATH=f"{bindir}:{env['PATH']}")
        args["service"] = "redis-nope.service"
        expected = "service redis-nope.service is not a systemd unit here: Unit redis-nope.service could not be found"
    else:
        program = {
            "missing binary": str(tmp_path / "no-such-redis-server"),
            "not executable": str(script),
            "not on PATH": "no-such-redis-server-7",
        }[broken]
        args["start_command"] = [program, str(inst.handle.dir / "redis.conf")]
        expected = {
            "missing binary": "does not exist",
            "not executable": "is not executable",
            "not on PATH": "is not on PATH",
        }[broken]
    for check_mode in (True, False):
        result = run_module("redis_restore", args, run_env, check_mode=check_mode)
        assert result["rc"] == 1, result
        assert expected in result["msg"] and "exception" not in result, result
        assert_untouched(inst, pid)
    assert not [p for p in os.listdir(inst.handle.dir) if p.startswith(".caas-")]


def test_when_even_the_rollback_cannot_start_redis_the_message_names_where_the_data_is(
    instances, env, storage_url, tmp_path
):
    """A start command that runs but exits at once: the restore's start fails, the previous data is put back,
    and the rollback's start fails too. The message names paths that exist, and Redis started from them by
    hand serves the data from before the restore."""
    inst = instances()
    fill(inst.client())
    snapshot(env, inst, storage_url)
    change(inst.client())
    failing = tmp_path / "redis-fails.sh"
    failing.write_text("#!/bin/sh\necho 'no, not today' >&2\nexit 3\n")
    failing.chmod(0o755)
    result = run_module("redis_restore", dict(inst.args(), storage_url=storage_url, start_command=[str(failing)]), env)
    assert result["rc"] == 1, result
    assert "Redis exited with code 3 while starting" in result["msg"], result
    assert "the rollback failed too" in result["msg"]
    named = [word.rstrip(",:") for word in result["msg"].split() if word.startswith("/")]
    assert named and all(os.path.exists(path) for path in named), (named, result["msg"])
    assert str(inst.handle.dir / "dump.rdb") in named
    proc = subprocess.Popen(services.redis_start_command(inst.handle), cwd=inst.handle.dir, start_new_session=True)
    try:
        services.wait_ready("redis", f"redis://127.0.0.1:{inst.port}/0", 30)
        client = inst.client()
        assert client.get("after-backup") == "must go away" and client.dbsize() == 1
    finally:
        services.stop_pid(proc.pid)
        proc.wait()
