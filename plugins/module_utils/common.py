# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The base module class, the common argument specs and the error types.

Every module of the collection builds a :class:`BackupModule`; the shared
logic below raises :class:`BackupError` subclasses, and only a module's
``main()`` turns one into ``fail_json`` through :meth:`BackupModule.fail_from_exception`.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlparse

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

COLLECTION_VERSION = "0.1.0"


class BackupError(Exception):
    """An expected failure: its message says what failed and why.

    Keyword arguments are result fields the module returns with its failure
    (what was done before it failed, for instance).
    """

    def __init__(self, message: str, **details) -> None:
        super().__init__(message)
        self.details = details


class ConfigurationError(BackupError):
    """Options that cannot work together, or an invalid value."""


class StorageError(BackupError):
    """The backup storage could not be reached, read or written."""


class NotFoundError(BackupError):
    """A backup set or object that was asked for does not exist."""


class IntegrityError(BackupError):
    """Stored data does not match its manifest (hash, size, format)."""


class EncryptionError(BackupError):
    """A key is invalid, or the data cannot be decrypted with it."""


class SourceError(BackupError):
    """The system being backed up or restored refused or failed."""


# Options every module has: where the backups live.
STORAGE_SPEC: dict = dict(
    storage_url=dict(type="str", required=True, fallback=(env_fallback, ["CAAS_BACKUP_STORAGE_URL"])),
    s3_endpoint_url=dict(
        type="str", fallback=(env_fallback, ["CAAS_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])
    ),
    aws_access_key_id=dict(
        type="str", no_log=True, aliases=["access_key"], fallback=(env_fallback, ["AWS_ACCESS_KEY_ID"])
    ),
    aws_secret_access_key=dict(
        type="str", no_log=True, aliases=["secret_key"], fallback=(env_fallback, ["AWS_SECRET_ACCESS_KEY"])
    ),
    aws_session_token=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SESSION_TOKEN"])),
    aws_region=dict(type="str", fallback=(env_fallback, ["AWS_REGION", "AWS_DEFAULT_REGION"])),
    s3_ca_bundle=dict(type="path"),
    validate_certs=dict(type="bool", default=True),
)

# Options of modules that write a backup set.
WRITE_SPEC: dict = dict(
    compression=dict(type="str", default="zstd", choices=["zstd", "gzip", "none"]),
    compression_level=dict(type="int"),
    encryption_recipients=dict(
        type="list", elements="str", default=[], fallback=(env_fallback, ["CAAS_AGE_RECIPIENTS"])
    ),
    source_name=dict(type="str"),
    tags=dict(type="list", elements="str", default=[]),
    s3_sse=dict(type="str", choices=["AES256", "aws:kms"]),
    s3_sse_kms_key_id=dict(type="str", no_log=False),
    s3_object_lock_mode=dict(type="str", choices=["GOVERNANCE", "COMPLIANCE"]),
    s3_object_lock_days=dict(type="int"),
    allow_unencrypted=dict(type="bool", default=True),
    signing_key=dict(type="str", no_log=True, fallback=(env_fallback, ["CAAS_SIGNING_KEY"])),
    signing_key_file=dict(type="path", fallback=(env_fallback, ["CAAS_SIGNING_KEY_FILE"])),
)

# Options of modules that read a backup set back.
READ_SPEC: dict = dict(
    encryption_identity=dict(type="str", no_log=True, fallback=(env_fallback, ["CAAS_AGE_IDENTITY"])),
    encryption_identity_file=dict(type="path", fallback=(env_fallback, ["CAAS_AGE_IDENTITY_FILE"])),
    source_name=dict(type="str"),
    trusted_signers=dict(type="list", elements="str", default=[], fallback=(env_fallback, ["CAAS_TRUSTED_SIGNERS"])),
    trusted_signers_file=dict(type="path", fallback=(env_fallback, ["CAAS_TRUSTED_SIGNERS_FILE"])),
)


# Options of modules that restore one set: which one.
RESTORE_SPEC: dict = dict(
    backup_id=dict(type="str"),
    before=dict(type="str"),
)

# Options of modules that restore into a target.
TARGET_SPEC: dict = dict(check_target=dict(type="bool", default=True))

# Options of restore modules: the other storage locations to restore from, in order, after storage_url.
LOCATIONS_SPEC: dict = dict(
    storage_fallback_urls=dict(
        type="list", elements="str", default=[], fallback=(env_fallback, ["CAAS_BACKUP_STORAGE_FALLBACK_URLS"])
    ),
)

# Options of modules that look at many sets (prune, info): which kinds and source.
SELECT_SPEC: dict = dict(
    kinds=dict(
        type="list",
        elements="str",
        default=[],
        choices=["mongo-full", "mongo-oplog", "redis-rdb", "redis-aof", "kafka-meta", "kafka-messages", "config"],
    ),
    source_name=dict(type="str"),
)


def _import_errors() -> dict[str, tuple[str, str | None]]:
    """Third-party libraries this collection needs, with the import error if missing."""
    missing: dict[str, tuple[str, str | None]] = {}
    for module_name, pip_name in (("boto3", "boto3"), ("zstandard", "zstandard"), ("pyrage", "pyrage")):
        try:
            __import__(module_name)
        except ImportError:
            missing[module_name] = (pip_name, traceback.format_exc())
    return missing


class BackupModule(AnsibleModule):
    """AnsibleModule with the collection's common options and error handling.

    ``writes``/``reads``/``restores``/``selects`` add the options of modules
    that write, read, restore one of, or look over many backup sets (``storage=False`` for a module that
    touches no storage); ``libraries`` names extra Python modules the module needs, checked
    with ``missing_required_lib`` so the error says what to install.
    """

    # What the audit hook of :meth:`run` records this module's runs as (see audit.py): an action of
    # audit.ACTIONS, and the kind (a string, or a function of the params) when one is known before the work.
    audit_action: str | None = None
    audit_kind: str | Callable[[dict], str] | None = None

    def __init__(
        self,
        argument_spec: dict,
        *,
        writes: bool = False,
        reads: bool = False,
        restores: bool = False,
        targets: bool = False,
        selects: bool = False,
        storage: bool = True,
        libraries: tuple[str, ...] = (),
        audit_action: str | None = None,
        audit_kind: str | Callable[[dict], str] | None = None,
        **kwargs,
    ) -> None:
        self.writes_sets = writes
        self.location_used: str | None = None  # the storage location a restore read from (see locate)
        self.has_storage = storage
        if audit_action is not None:
            self.audit_action = audit_action
        if audit_kind is not None:
            self.audit_kind = audit_kind
        self._storage = None
        self._attempt = None  # the run the audit hook is recording (see run)
        spec = dict(STORAGE_SPEC) if storage else {}
        if writes:
            spec.update(WRITE_SPEC)
        if reads or restores:
            spec.update(READ_SPEC)
        if targets:
            spec.update(TARGET_SPEC)
        if restores or targets:
            spec.update(LOCATIONS_SPEC)
        if restores:
            spec.update(RESTORE_SPEC)
            kwargs["mutually_exclusive"] = [("backup_id", "before"), *kwargs.get("mutually_exclusive", ())]
        if selects:
            spec.update(SELECT_SPEC)
        spec.update(argument_spec)
        super().__init__(argument_spec=spec, **kwargs)
        self.no_log_values.update(url_secrets(self.params))
        missing = _import_errors()
        for name in libraries:
            try:
                __import__(name)
            except ImportError:
                missing[name] = (name, traceback.format_exc())
        for pip_name, exc in missing.values():
            self.fail_json(msg=missing_required_lib(pip_name), exception=exc)

    def _log_invocation(self) -> None:
        """Log the invocation (syslog/journal) with the passwords inside URL options masked: Ansible logs it
        from ``__init__``, before the masking above could be added."""
        self.no_log_values.update(url_secrets(self.params))
        super()._log_invocation()

    def fail_json(self, msg: str, **kwargs) -> None:
        """fail_json, with the passwords inside URL options masked even when the argument spec was refused
        (Ansible fails inside ``__init__`` then, before this class could add them)."""
        self.no_log_values.update(url_secrets(getattr(self, "params", None) or {}))
        if getattr(self, "_attempt", None) is not None:  # a failure the work reported itself
            self._audit_result({}, "ModuleFailure")
        super().fail_json(msg, **kwargs)

    def open_storage(self, url: str | None = None, prefix: str = ""):
        """The Storage named by ``storage_url`` (or ``url``, another location) and the S3 options.

        ``prefix`` names another storage's options (``dest_``: ``dest_storage_url``, ``dest_s3_endpoint_url``,
        ...), each one unset taking the unprefixed option's value; that storage is written to. A module that
        writes backup sets, or to such a storage, creates a local storage directory that does not exist yet
        (not in check mode), with a warning saying so; every other module fails on it when it first reads.
        """
        from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage

        default = url is None and not prefix
        if default and self._storage is not None:  # the audit hook opened it already
            return self._storage
        p = self.params

        def option(name: str):
            value = p.get(prefix + name)
            return p.get(name) if value is None else value

        storage = open_storage(
            url or option("storage_url"),
            create=(self.writes_sets or bool(prefix)) and not self.check_mode,
            endpoint_url=option("s3_endpoint_url"),
            access_key=option("aws_access_key_id"),
            secret_key=option("aws_secret_access_key"),
            session_token=option("aws_session_token"),
            region=option("aws_region"),
            ca_bundle=p.get("s3_ca_bundle"),
            validate_certs=p.get("validate_certs", True),
            sse=option("s3_sse"),
            sse_kms_key_id=option("s3_sse_kms_key_id"),
            object_lock_mode=option("s3_object_lock_mode"),
            object_lock_days=option("s3_object_lock_days"),
        )
        if getattr(storage, "created", False):
            self.warn(f"storage directory {storage.root} did not exist: created")
        if default:
            self._storage = storage
        return storage

    def locations(self) -> list:
        """The storage locations a restore may read from, in order: ``storage_url``, then ``storage_fallback_urls``.

        Every URL is parsed here, so a bad one fails before any location is contacted; they share the S3 options.
        """
        urls = [self.params["storage_url"]]
        urls += [u for u in self.params.get("storage_fallback_urls") or () if u and u not in urls]
        return [self.open_storage(u) for u in urls]

    def locate(self, find: Callable) -> tuple:
        """``(storage, find(storage))`` for the first location where ``find`` succeeds (see ``first_location``).

        A location passed over (unreachable, or without a complete set of what is asked) is a warning naming
        it; the location used is the result's ``storage_url``.
        """
        from ansible_collections.caas.backup.plugins.module_utils.catalog import first_location

        storage, found = first_location(self.locations(), find, self.warn)
        self.location_used = storage.url
        return storage, found

    def restore_source(self, kind: str) -> tuple:
        """``(storage, set)``: the set a restore module was asked for (:meth:`find_set`), from the first location
        holding it whole (every object its manifest names, at its size)."""
        from ansible_collections.caas.backup.plugins.module_utils.catalog import check_stored

        def find(storage):
            bset = self.find_set(storage, kind)
            check_stored(bset, storage.url)
            return bset

        return self.locate(find)

    def write_options(self):
        """The compression and encryption a new backup set is written with.

        A set with neither age recipients nor S3 server-side encryption is refused when
        ``allow_unencrypted`` is false (what the playbooks pass), and warned about otherwise.
        """
        from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

        p = self.params
        # Server-side encryption counts only where there is a server: S3.
        server_side = p.get("s3_sse") and str(p.get("storage_url") or "").startswith("s3://")
        if not p["encryption_recipients"] and not server_side:
            if not p["allow_unencrypted"]:
                raise ConfigurationError(
                    "refusing to write an unencrypted backup: give encryption_recipients (or CAAS_AGE_RECIPIENTS) "
                    "or s3_sse, or allow it with allow_unencrypted (caas_backup_allow_unencrypted in the playbooks)"
                )
            self.warn("writing an unencrypted backup: no encryption_recipients and no s3_sse")
        return WriteOptions(
            compression=p["compression"],
            level=p.get("compression_level"),
            recipients=tuple(p["encryption_recipients"] or ()),
            signer=self.signing_key(),
        )

    def _signing_library(self) -> None:
        try:
            __import__("cryptography")
        except ImportError:
            self.fail_json(msg=missing_required_lib("cryptography"), exception=traceback.format_exc())

    def _read_text(self, option: str) -> str:
        path = self.params[option]
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read {option} {path}: {getattr(exc, 'strerror', None) or exc}") from None

    def signing_key(self):
        """The Ed25519 key (``signing_key`` or ``signing_key_file``) that signs new manifests, or None."""
        p = self.params
        if not (p.get("signing_key") or p.get("signing_key_file")):
            return None
        if p.get("signing_key") and p.get("signing_key_file"):
            raise ConfigurationError("give signing_key or signing_key_file, not both")
        self._signing_library()
        from ansible_collections.caas.backup.plugins.module_utils.signing import SigningKey

        if p.get("signing_key"):
            return SigningKey.from_openssh(p["signing_key"], "signing_key")
        return SigningKey.from_openssh(self._read_text("signing_key_file"), f"signing_key_file {p['signing_key_file']}")

    def trusted_signers(self) -> list | None:
        """The public keys manifests must be signed by (``trusted_signers`` and ``trusted_signers_file``).

        None when neither is given; a module that reads sets then warns, once, that signatures are not checked.
        """
        p = self.params
        if "trusted_signers" not in p:  # a module without the read options (prune, info)
            return None
        if not (p["trusted_signers"] or p["trusted_signers_file"]):
            if not getattr(self, "_warned_unsigned", False):
                self._warned_unsigned = True
                self.warn(
                    "backup manifest signatures are not checked: give trusted_signers or trusted_signers_file "
                    "to refuse sets not signed by the backup side"
                )
            return None
        self._signing_library()
        from ansible_collections.caas.backup.plugins.module_utils.signing import parse_trusted

        keys = []
        for number, entry in enumerate(p["trusted_signers"] or (), start=1):
            keys.extend(parse_trusted(entry.splitlines(), f"trusted_signers entry {number}"))
        if p["trusted_signers_file"]:
            lines = self._read_text("trusted_signers_file").splitlines()
            keys.extend(parse_trusted(lines, f"trusted_signers_file {p['trusted_signers_file']}"))
        if not keys:
            raise ConfigurationError("trusted_signers and trusted_signers_file hold no ssh-ed25519 public key")
        return keys

    def planned_set(self, kind: str, source: str) -> dict:
        """The check-mode result fields of a backup module: what a real run would write, and where.

        The storage is only read (to prove it can be reached, as the real run needs; a local directory
        that does not exist yet is only announced, since the real run creates it); nothing is written.
        ``changed`` is true because a real run writes a new set; ``backup_id`` is empty because none was
        made; ``location`` is the path the new set's id would be added to.
        """
        from ansible_collections.caas.backup.plugins.module_utils.storage import LocalStorage

        self.write_options()  # what a real run would refuse (plaintext not allowed, a bad signing key) fails here
        storage = self.open_storage()
        if isinstance(storage, LocalStorage) and not os.path.isdir(storage.root):
            self.warn(f"storage directory {storage.root} does not exist: a real run creates it")
        else:
            storage.check()
        return dict(changed=True, backup_id="", kind=kind, location=f"{storage.url}/{kind}/{source}/")

    @property
    def plan_only(self) -> bool:
        """Check mode that plans the backup side only (``check_target: false``): the target is never contacted."""
        return self.check_mode and not self.params.get("check_target", True)

    def planned_restore(self, *sets, **fields) -> dict:
        """The result of a :attr:`plan_only` restore of ``sets``: each one's identity checked, nothing contacted."""
        from ansible_collections.caas.backup.plugins.module_utils.catalog import check_openable, iso

        for bset in sets:
            check_openable(bset, self.identities())
        base = sets[0]
        return dict(
            changed=True,
            backup_id=base.backup_id,
            source=base.source,
            backup_time=iso(base.time),
            msg=f"would restore {base.prefix} ({iso(base.time)}); the target was not contacted (check_target: false)",
            **fields,
        )

    def find_set(self, storage, kind: str):
        """The set a restore module was asked for: ``backup_id``, else the latest (``before`` a time).

        With trusted signers, only a set whose manifest they signed is returned; passing over a newer
        broken set is a module warning.
        """
        from ansible_collections.caas.backup.plugins.module_utils.catalog import find_set, parse_time

        p = self.params
        before = parse_time(p["before"]) if p["before"] else None
        return find_set(storage, kind, p["backup_id"], p["source_name"], before, self.trusted_signers(), self.warn)

    def selected_sets(self, storage) -> list:
        """The catalog's sets of the ``kinds`` and ``source_name`` asked for (all when empty).

        Checked against the trusted signers when the module has them (see :meth:`trusted_signers`).
        """
        from ansible_collections.caas.backup.plugins.module_utils.catalog import list_sets

        kinds, source = self.params["kinds"], self.params["source_name"]
        sets = list_sets(storage, trust=self.trusted_signers())
        return [s for s in sets if (not kinds or s.kind in kinds) and (not source or s.source == source)]

    def identities(self) -> list[str]:
        """The age identities (secret keys) given to decrypt backups."""
        p = self.params
        found: list[str] = []
        if p.get("encryption_identity"):
            found.append(p["encryption_identity"])
        if p.get("encryption_identity_file"):
            path = p["encryption_identity_file"]
            try:
                with open(path, encoding="utf-8") as f:
                    found.extend(line.strip() for line in f if line.strip() and not line.startswith("#"))
            except OSError as exc:
                self.fail_json(msg=f"Failed to read encryption_identity_file {path}: {exc.strerror}")
        return found

    def fail_from_exception(self, exc: Exception, action: str, **result) -> None:
        """Fail with ``Failed to <action>: <cause>``; a traceback only for unexpected errors."""
        if isinstance(exc, BackupError):
            self.fail_json(msg=f"Failed to {action}: {exc}", **{**exc.details, **result})
        self.fail_json(
            msg=f"Failed to {action}: {type(exc).__name__}: {exc}", exception=traceback.format_exc(), **result
        )

    def run(self, work, action: str) -> None:
        """Exit with ``work(self)``'s result, or fail with ``Failed to <action>: <cause>``.

        The one place a module's errors become ``fail_json``: expected ones
        (BackupError) with their message alone, anything else with its type
        and traceback, so no cause is hidden. Every option's value is checked
        first (:func:`validate_options`), before ``work`` touches anything.
        """
        try:
            validate_options(self.params)
            self._attempt = self._audit_start()
            result = work(self)
        except Exception as exc:  # noqa: BLE001  reported with its traceback, never swallowed
            self._audit_result(getattr(exc, "details", {}), type(exc).__name__)
            self.fail_from_exception(exc, action)
        if self.location_used:
            result.setdefault("storage_url", self.location_used)
        self._audit_result(result, None)
        self.exit_json(**result)

    def _audit_start(self):
        """Record the start of this run (see audit.py), for a module with an ``audit_action``, not in check mode.

        A storage that refuses the record fails a backup, as its work would have (it writes there too); a
        restore from a storage it may only read (read-only credentials on the restore side) goes on, warned
        that it is not recorded: an audit log must not stand in the way of a recovery.
        """
        if not self.audit_action or not self.has_storage or self.check_mode:
            return None
        from ansible_collections.caas.backup.plugins.module_utils.audit import record_start

        kind = self.audit_kind(self.params) if callable(self.audit_kind) else self.audit_kind
        if kind is None and len(self.params.get("kinds") or ()) == 1:
            kind = self.params["kinds"][0]
        name = self._name  # Ansible passes the module's name; a module run by hand (tests) is its file's
        if name == "basic.py":
            name = os.path.splitext(os.path.basename(getattr(sys.modules["__main__"], "__file__", "") or name))[0]
        storage = self.open_storage()
        if self.writes_sets:
            storage.check()  # a storage that is not there fails here with its own cause, and nothing is created
            return record_start(storage, self.audit_action, name, kind, self.params.get("source_name"))
        try:  # a restore may read another location (storage_fallback_urls) when this one is gone
            storage.check()
            return record_start(storage, self.audit_action, name, kind, self.params.get("source_name"))
        except BackupError as exc:
            self.warn(f"this run is not recorded in the audit log: {exc}")
            return None

    def _audit_result(self, result: dict, error: str | None) -> None:
        """Record the result (``error``: the failure's class name) of the run :meth:`_audit_start` recorded, once.

        A storage failure here is a warning: the work is done (or failed for its own cause), and the start
        record alone counts the run as failed later.
        """
        attempt, self._attempt = self._attempt, None
        if attempt is None:
            return
        from ansible_collections.caas.backup.plugins.module_utils.audit import record_result

        try:
            record_result(self._storage, attempt, result, error)
        except BackupError as exc:
            self.warn(f"the audit record of this run could not be written: {exc}")


def default_source_name(*parts: str) -> str:
    """A stable, credential-free source name made of the given parts (joined by ``-``).

    The rule every module follows: the default names what is backed up by its own stable identity
    (replica set name, cluster id, the configured host and port), never by the name of the machine
    the module happens to run on, which changes when a site is rebuilt on new hosts. Only a module
    whose data *is* the machine's (configuration files) passes :func:`host_name` itself.
    """
    name = "-".join(p for p in parts if p)
    if not name:
        raise ConfigurationError("no source name could be derived: set source_name")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "default"


def host_name() -> str:
    """This machine's host name: the default source of backups whose data is the machine's own (config files)."""
    return os.uname().nodename


# ---------------------------------------------------------------- validation of option values
#
# Ansible's argument spec checks each option's type and choices; the checks below
# check the values, for every module that has an option of that name, before the
# module reads or touches anything: BackupModule.run runs them first, so a bad value
# fails with "Failed to <action>: <option> ..." and never as a traceback from deep in
# a client library. One table, by option name: an option means the same everywhere.

Check = Callable[[str, Any, dict], None]

# What a time option may say: from the epoch to well within a 32-bit BSON timestamp (2106).
TIME_RANGE = (
    datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc),
    datetime.datetime(2100, 1, 1, tzinfo=datetime.timezone.utc),
)
# Compression levels each codec takes.
COMPRESSION_LEVELS = {"zstd": (1, 22), "gzip": (0, 9)}
HOUR = 3600
DAY = 24 * HOUR
YEAR = 365 * DAY


def bounded(low: float, high: float, unit: str = "") -> Check:
    """A check that a number lies in ``[low, high]`` (a bool is not a number here)."""

    def check(name: str, value: Any, params: dict) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ConfigurationError(f"{name} must be a number, not {value!r}")
        if not low <= value <= high:
            raise ConfigurationError(f"{name} must be between {low} and {high}{unit}, not {value!r}")

    return check


def each(check: Check) -> Check:
    """A check applied to every element of a list option (``name[i]``)."""

    def check_all(name: str, value: Any, params: dict) -> None:
        for index, item in enumerate(value):
            check(f"{name}[{index}]", item, params)

    return check_all


def mapping_of(check: Check, keys: tuple[str, ...] = ()) -> Check:
    """A check that a dict option's values pass ``check`` (``name.key``), and its keys are in ``keys`` if given."""

    def check_all(name: str, value: Any, params: dict) -> None:
        for key, item in value.items():
            if keys and key not in keys:
                raise ConfigurationError(f"{name} has an unknown key {key!r}: use {', '.join(keys)}")
            check(f"{name}.{key}", item, params)

    return check_all


def text(name: str, value: Any, params: dict) -> None:
    """A string."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, not {value!r}")


PORT = bounded(1, 65535)


def host_port(name: str, value: Any, params: dict) -> None:
    """``host:port`` (``[v6]:port`` too) with a port 1-65535."""
    text(name, value, params)
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit():
        raise ConfigurationError(f"{name} must be host:port, not {value!r}")
    PORT(name, int(port), params)


def url(*schemes: str) -> Check:
    """A check that a URL parses, has one of ``schemes``, a host, and a valid port if it gives one.

    The message names the scheme and host only: a URL may hold a password.
    """

    def check(name: str, value: Any, params: dict) -> None:
        text(name, value, params)
        parsed = urlparse(value)
        if parsed.scheme not in schemes:
            raise ConfigurationError(f"{name} must start with {' or '.join(s + '://' for s in schemes)}")
        try:
            port = parsed.port
        except ValueError as exc:
            raise ConfigurationError(f"{name} has an invalid port ({exc})") from None
        if not parsed.hostname:
            raise ConfigurationError(f"{name} names no host")
        if port is not None:
            PORT(f"{name} port", port, params)

    return check


def mongo_uri(name: str, value: Any, params: dict) -> None:
    """A MongoDB connection string pymongo accepts (checked without connecting)."""
    from ansible_collections.caas.backup.plugins.module_utils.mongo.client import check_uri

    check_uri(value, name)


def redis_url(name: str, value: Any, params: dict) -> None:
    """``redis://`` or ``rediss://`` with a host, a valid port and no password."""
    url("redis", "rediss")(name, value, params)
    if urlparse(value).password is not None:
        raise ConfigurationError(f"{name} must not hold a password: give it as login_password (never logged)")


def storage_location(name: str, value: Any, params: dict) -> None:
    """A storage URL open_storage accepts (``file:///path``, ``s3://bucket/prefix``), checked without reaching it."""
    from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage

    text(name, value, params)
    try:
        open_storage(value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{name}: {exc}") from None


def grace_hours(name: str, value: Any, params: dict) -> None:
    """``incomplete_grace_hours``, as retention reads it (one check, one message)."""
    from ansible_collections.caas.backup.plugins.module_utils.retention import grace_period

    grace_period(value)


def iso_time(name: str, value: Any, params: dict) -> None:
    """An ISO 8601 time within TIME_RANGE."""
    from ansible_collections.caas.backup.plugins.module_utils.catalog import parse_time

    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be an ISO 8601 time (e.g. 2026-02-21T10:30:00Z)")
    try:
        moment = parse_time(value)
    except OverflowError:
        moment = None
    except ConfigurationError as exc:
        raise ConfigurationError(f"{name}: {exc}") from None
    if moment is None or not TIME_RANGE[0] <= moment < TIME_RANGE[1]:
        raise ConfigurationError(
            f"{name} {value!r} must lie between {TIME_RANGE[0]:%Y-%m-%d} and {TIME_RANGE[1]:%Y-%m-%d}"
        )


def point_in_time(name: str, value: Any, params: dict) -> None:
    """An ISO 8601 time, or an oplog position ``{t, i}`` (a mapping or its JSON), within TIME_RANGE."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigurationError(f"{name} {value!r} is not valid JSON {{t, i}}") from None
    if not isinstance(value, dict):
        iso_time(name, value, params)
        return
    if "t" not in value:
        raise ConfigurationError(f"{name} {value!r} must be ISO 8601 UTC or a mapping {{t, i}}")
    low, high = (int(moment.timestamp()) for moment in TIME_RANGE)
    for key, (least, most) in (("t", (low, high)), ("i", (0, 2**32 - 1))):
        item = value.get(key, 0)
        if isinstance(item, str) and item.isdigit():
            item = int(item)
        bounded(least, most)(f"{name}.{key}", item, params)


def parent_dir(name: str, value: Any, params: dict) -> None:
    """A path to be written whose directory exists."""
    directory = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(directory):
        raise ConfigurationError(f"{name}: the directory {directory} does not exist")


def existing_dir(name: str, value: Any, params: dict) -> None:
    """A directory that exists."""
    if not os.path.isdir(value):
        raise ConfigurationError(f"{name}: the directory {value} does not exist")


def existing_file(name: str, value: Any, params: dict) -> None:
    """A file that exists (certificates, keys, a config file read)."""
    if not os.path.isfile(value):
        raise ConfigurationError(f"{name}: {value} does not exist or is not a file")


def compression_level(name: str, value: Any, params: dict) -> None:
    """A level the chosen ``compression`` takes (none takes no level)."""
    codec = params.get("compression")
    if codec not in COMPRESSION_LEVELS:
        raise ConfigurationError(f"{name} goes with compression zstd or gzip, not {codec}")
    low, high = COMPRESSION_LEVELS[codec]
    bounded(low, high, f" for {codec}")(name, value, params)


def write_concern(name: str, value: Any, params: dict) -> None:
    """``{w, j, wtimeout}``: w a node count or a tag name, j a bool, wtimeout milliseconds."""
    for key, item in value.items():
        if key == "w":
            if isinstance(item, str) and item.isdigit():
                item = int(item)
            if not isinstance(item, str):
                bounded(0, 50)(f"{name}.w", item, params)
        elif key == "j":
            if not isinstance(item, bool):
                raise ConfigurationError(f"{name}.j must be true or false, not {item!r}")
        elif key == "wtimeout":
            if isinstance(item, str) and item.isdigit():
                item = int(item)
            bounded(0, DAY * 1000)(f"{name}.wtimeout", item, params)
        else:
            raise ConfigurationError(f"{name} has an unknown key {key!r}: use w, j, wtimeout")


def alert(name: str, value: Any, params: dict) -> None:
    """One alert as backup_info returns it: string fields, a known severity."""
    for key, item in value.items():
        if key == "severity" and item not in ("warning", "critical"):
            raise ConfigurationError(f"{name}.severity must be warning or critical, not {item!r}")
        if key in ("kind", "source", "message", "severity"):
            text(f"{name}.{key}", item, params)


def _kinds() -> tuple[str, ...]:
    from ansible_collections.caas.backup.plugins.module_utils.catalog import KINDS

    return KINDS


def max_age_hours(name: str, value: Any, params: dict) -> None:
    """Hours per backup kind."""
    mapping_of(bounded(0.01, 10 * YEAR // HOUR, " hours"), _kinds())(name, value, params)


def size_change_ratios(name: str, value: Any, params: dict) -> None:
    """Fractions per backup kind."""
    mapping_of(bounded(0, 1000), (*_kinds(), "kafka-messages"))(name, value, params)


def header(name: str, value: Any, params: dict) -> None:
    """An HTTP header value: a string without line breaks (never echoed: headers carry tokens)."""
    if not isinstance(value, str) or "\n" in value or "\r" in value:
        raise ConfigurationError(f"{name} must be a string on one line (its value is not shown)")


# Options that name a file the module reads (certificates, keys, a config file): it must exist.
FILE_OPTIONS = (
    "tls_ca_file",
    "tls_certificate_key_file",
    "tls_ca_cert",
    "tls_cert",
    "tls_key",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "s3_ca_bundle",
    "config_file",
)

OPTION_CHECKS: dict[str, Check] = {
    # where: servers and storage
    "login_port": PORT,
    "smtp_port": PORT,
    "uri": mongo_uri,
    "scratch_mongo_uri": mongo_uri,
    "url": redis_url,
    "bootstrap_servers": each(host_port),
    "s3_endpoint_url": url("http", "https"),
    "dest_s3_endpoint_url": url("http", "https"),
    "dest_storage_url": storage_location,
    "storage_fallback_urls": each(storage_location),
    "webhook_url": url("http", "https"),
    "webhook_headers": mapping_of(header),
    # how long: seconds unless the name says otherwise
    "connect_timeout": bounded(0.1, HOUR, " seconds"),
    "request_timeout": bounded(1, HOUR, " seconds"),
    "timeout": bounded(1, DAY, " seconds"),
    "duration": bounded(0, 7 * DAY, " seconds"),
    "slice_seconds": bounded(1, DAY, " seconds"),
    "max_age": bounded(0, YEAR, " seconds"),
    "incomplete_grace_hours": grace_hours,
    "s3_object_lock_days": bounded(1, 100 * 365, " days"),
    "dest_s3_object_lock_days": bounded(1, 100 * 365, " days"),
    "max_age_hours": max_age_hours,
    "before": iso_time,
    "since": iso_time,
    "target_time": point_in_time,
    "offsets_timestamp": iso_time,
    # how much
    "compression_level": compression_level,
    "parallel_collections": bounded(1, 64),
    "insertion_workers": bounded(1, 64),
    "minimum_redundancy": bounded(1, 10000),
    "newest": bounded(1, 1000000),
    "size_change_ratio": bounded(0, 1000),
    "size_change_ratios": size_change_ratios,
    "storage_quota_bytes": bounded(1, 2**63 - 1, " bytes"),
    "batch_bytes": bounded(1, 100 * 2**20, " bytes (100 MiB, Kafka's default socket.request.max.bytes)"),
    "audit_window_days": bounded(1, 3660, " days"),
    "audit_since": iso_time,
    "audit_until": iso_time,
    "pushgateway_url": url("http", "https"),
    "write_concern": write_concern,
    "alerts": each(alert),
    # paths written to, and files read
    "metrics_path": parent_dir,
    "html_path": parent_dir,
    "lock_dir": existing_dir,
    "scratch_dir": existing_dir,
    **dict.fromkeys(FILE_OPTIONS, existing_file),
}


def validate_options(params: dict, checks: dict[str, Check] = OPTION_CHECKS) -> None:
    """Run ``checks`` on every option that is set; ConfigurationError for the first bad value.

    An empty string counts as unset, as the modules treat it (roles pass ``""`` for "not given").
    """
    for name, check in checks.items():
        if params.get(name) not in (None, ""):
            check(name, params[name], params)


# Options that hold a URL, whose password part (``scheme://user:password@host``) Ansible must mask wherever
# it would print it (the result's ``invocation`` with -v, error messages), even where the option is refused.
URL_OPTIONS = (
    "url",
    "uri",
    "scratch_mongo_uri",
    "s3_endpoint_url",
    "dest_s3_endpoint_url",
    "webhook_url",
    "pushgateway_url",
)


def url_secrets(params: dict) -> set[str]:
    """The passwords (as written and decoded) inside the URL options that are set."""
    found: set[str] = set()
    for name in URL_OPTIONS:
        value = params.get(name)
        if isinstance(value, str) and "@" in value:
            userinfo = value.partition("://")[2].rpartition("@")[0]
            password = userinfo.partition(":")[2]
            if password:
                found.update({password, unquote(password)})
    return found
