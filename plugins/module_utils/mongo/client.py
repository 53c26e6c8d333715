# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one MongoDB connection helper: options, client, and errors that say what went wrong.

The password only ever travels as a pymongo keyword argument (or inside a
``uri`` the operator gave, which is ``no_log``); error messages name hosts,
never credentials.

Which server: an explicit ``uri`` wins over explicit ``login_host``/``login_port``,
which win over ``CAAS_MONGO_URI`` from the environment, read only when none of the
three is given (never a generic name such as ``MONGO_URI`` that applications use).
The env fallback is therefore not in the argument spec: Ansible would apply it
before the module could tell an explicit ``login_host`` from the default one.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from ansible.module_utils.basic import env_fallback

from ansible_collections.caas.backup.plugins.module_utils.common import (
    ConfigurationError,
    SourceError,
    default_source_name,
)

try:
    import pymongo
    from pymongo import errors as pymongo_errors
    from pymongo import uri_parser
except ImportError:  # checked by BackupModule
    pymongo = None

# Connection options shared by mongo_dump and mongo_restore (doc fragment: caas.backup.mongo).
MONGO_SPEC: dict = dict(
    uri=dict(type="str", no_log=True),
    login_host=dict(type="str"),
    login_port=dict(type="int"),
    login_user=dict(type="str"),
    login_password=dict(type="str", no_log=True, fallback=(env_fallback, ["CAAS_MONGO_PASSWORD", "MONGO_PASSWORD"])),
    login_database=dict(type="str", default="admin"),
    replica_set=dict(type="str"),
    direct_connection=dict(type="bool"),
    tls=dict(type="bool", default=False),
    tls_ca_file=dict(type="path"),
    tls_certificate_key_file=dict(type="path"),
    tls_allow_invalid_certificates=dict(type="bool", default=False),
    tls_allow_invalid_hostnames=dict(type="bool", default=False),
    connect_timeout=dict(type="int", default=10),
)

SYSTEM_DATABASES = ("local", "config")
AUTH_COLLECTIONS = ("system.users", "system.roles")
# Where a restore stages users and roles for _mergeAuthzCollections, as mongorestore does.
AUTH_STAGING = {"system.users": "tempusers", "system.roles": "temproles"}
AUTH_FAILED = 18


URI_ENV = "CAAS_MONGO_URI"


def resolve_target(params: dict) -> dict:
    """``params`` with the server settled: the env URI only when no target option was given, else defaults.

    A copy: the URI from the environment (which may hold a password) never goes back into the module's
    options, which Ansible returns as ``invocation``.
    """
    params = dict(params)
    if not params.get("uri") and not params.get("login_host") and not params.get("login_port"):
        params["uri"] = os.environ.get(URI_ENV) or None
    if not params.get("uri"):
        params["login_host"] = params.get("login_host") or "localhost"
        params["login_port"] = params.get("login_port") or 27017
    return params


def describe(params: dict) -> str:
    """Credential-free ``[replica_set/]host:port[,...]`` of the server the options point at."""
    params = resolve_target(params)
    replica_set = params.get("replica_set")
    if params.get("uri"):
        try:
            parsed = _parse_uri(params["uri"], validate=False)
        except (pymongo_errors.InvalidURI, pymongo_errors.ConfigurationError, ValueError):
            return "the given uri"
        nodes = ",".join(f"{h}:{p}" for h, p in parsed["nodelist"]) or "the given uri"
        replica_set = replica_set or parsed["options"].get("replicaSet")
    else:
        nodes = f"{params.get('login_host') or 'localhost'}:{params.get('login_port') or 27017}"
    return f"{replica_set}/{nodes}" if replica_set else nodes


def _parse_uri(uri: str, validate: bool) -> dict:
    srv = "mongodb+srv://"
    # An SRV URI is parsed as a plain one: parse_uri would resolve it in DNS, and checking options connects nowhere.
    probe = "mongodb://" + uri[len(srv) :] if uri.startswith(srv) else uri
    return uri_parser.parse_uri(probe, validate=validate, warn=not validate)


def check_uri(uri: str, option: str = "uri") -> None:
    """ConfigurationError with pymongo's reason (never the URI: it may hold a password) for a bad URI."""
    try:
        _parse_uri(uri, validate=True)
    except (pymongo_errors.InvalidURI, pymongo_errors.ConfigurationError, ValueError) as exc:
        reason = str(exc).replace(uri, "<uri>")
        raise ConfigurationError(f"{option} is not a valid MongoDB connection string: {reason}") from None


def connect(params: dict, **extra):
    """A connected MongoClient (a ``ping`` answered), or SourceError/ConfigurationError saying why not."""
    params = resolve_target(params)
    if params.get("uri"):
        check_uri(params["uri"])
    kwargs: dict = dict(
        serverSelectionTimeoutMS=int(params.get("connect_timeout") or 10) * 1000,
        connectTimeoutMS=int(params.get("connect_timeout") or 10) * 1000,
        appname="caas.backup",
    )
    if params.get("login_user"):
        kwargs.update(
            username=params["login_user"],
            password=params.get("login_password") or "",
            authSource=params.get("login_database") or "admin",
        )
    if params.get("replica_set"):
        kwargs["replicaSet"] = params["replica_set"]
    if params.get("direct_connection") is not None:
        kwargs["directConnection"] = params["direct_connection"]
    if params.get("tls") or params.get("tls_ca_file") or params.get("tls_certificate_key_file"):
        kwargs["tls"] = True
        if params.get("tls_ca_file"):
            kwargs["tlsCAFile"] = params["tls_ca_file"]
        if params.get("tls_certificate_key_file"):
            kwargs["tlsCertificateKeyFile"] = params["tls_certificate_key_file"]
        if params.get("tls_allow_invalid_certificates"):
            kwargs["tlsAllowInvalidCertificates"] = True
        if params.get("tls_allow_invalid_hostnames"):
            kwargs["tlsAllowInvalidHostnames"] = True
    kwargs.update(extra)
    where = describe(params)
    try:
        if params.get("uri"):
            client = pymongo.MongoClient(params["uri"], **kwargs)
        else:
            client = pymongo.MongoClient(
                params.get("login_host") or "localhost", int(params.get("login_port") or 27017), **kwargs
            )
    except pymongo_errors.ConfigurationError as exc:
        raise ConfigurationError(f"invalid MongoDB connection options for {where}: {exc}") from None
    try:
        client.admin.command("ping")
    except pymongo_errors.PyMongoError as exc:
        client.close()
        raise translate(exc, where) from None
    return client


def translate(exc: Exception, where: str) -> Exception:
    """A pymongo error as the collection's typed error, naming the server but no credential."""
    if pymongo is None or not isinstance(exc, pymongo_errors.PyMongoError):
        return exc
    text = str(exc)
    if isinstance(exc, pymongo_errors.OperationFailure) and exc.code == AUTH_FAILED:
        return SourceError(
            f"authentication to MongoDB at {where} failed (check login_user, login_password, login_database)"
        )
    if isinstance(exc, pymongo_errors.ServerSelectionTimeoutError):
        lowered = text.lower()
        if "ssl" in lowered or "certificate" in lowered or "tls" in lowered:
            return SourceError(f"TLS connection to MongoDB at {where} failed: {_short(text)}")
        return SourceError(f"MongoDB at {where} cannot be reached: {_short(text)}")
    if isinstance(exc, pymongo_errors.ConnectionFailure):
        return SourceError(f"connection to MongoDB at {where} failed: {_short(text)}")
    if isinstance(exc, pymongo_errors.OperationFailure):
        return SourceError(f"MongoDB at {where} refused: {_short(text)}")
    return SourceError(f"MongoDB at {where}: {type(exc).__name__}: {_short(text)}")


def _short(text: str) -> str:
    # pymongo appends the topology description: the first part says it.
    return text.split(", Timeout:")[0].split(", Topology Description:")[0][:400]


def source_name(params: dict, hello: dict) -> str:
    """The default source name: the replica set name, else host_port."""
    if params.get("source_name"):
        return params["source_name"]
    if hello.get("setName"):
        return default_source_name(hello["setName"])
    return default_source_name(describe(params).replace(":", "_"))


def ns_selected(name: str, include: list[str] | tuple[str, ...], exclude: list[str] | tuple[str, ...]) -> bool:
    """Whether ``db.collection`` passes the ``ns_include``/``ns_exclude`` globs (``*`` as in mongodump)."""
    if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
        return False
    return not any(fnmatch.fnmatchcase(name, p) for p in exclude)


@contextlib.contextmanager
def scratch_server(directory: str, uri: str | None = None, timeout: float = 60.0) -> Iterator[str]:
    """A MongoDB server to test-restore into: ``uri`` when given, else one started in ``directory``.

    The started server is ``mongod`` when installed, else ``secantusd-py`` (the
    stand-in this project tests with); it listens on loopback only, holds its
    data in ``directory``, and is stopped on exit.
    """
    if uri:
        yield uri
        return
    search = os.pathsep.join([os.environ.get("PATH", ""), os.path.dirname(sys.executable)])
    data = os.path.join(directory, "scratch-mongo")
    os.makedirs(data)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if shutil.which("mongod", path=search):
        argv = [shutil.which("mongod", path=search), "--dbpath", data, "--bind_ip", "127.0.0.1", "--port", str(port)]
    elif shutil.which("secantusd-py", path=search):
        config = os.path.join(directory, "secantusd.toml")  # an explicit config: no auto-discovery of others
        with open(config, "w", encoding="utf-8") as fh:
            fh.write("# scratch server for backup_verify\n")
        argv = [
            shutil.which("secantusd-py", path=search),
            "--config",
            config,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            data,
        ]
    else:
        raise SourceError("no mongod (or secantusd-py) to start a scratch server with: give scratch_mongo_uri")
    log = os.path.join(directory, "scratch-mongo.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    address = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                with open(log, encoding="utf-8", errors="replace") as fh:
                    raise SourceError(f"the scratch MongoDB server exited: {fh.read()[-500:]}")
            try:
                with pymongo.MongoClient(address, serverSelectionTimeoutMS=500) as probe_client:
                    probe_client.admin.command("ping")
                break
            except pymongo_errors.PyMongoError:
                if time.monotonic() > deadline:
                    raise SourceError(f"the scratch MongoDB server did not answer within {timeout:.0f}s") from None
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
