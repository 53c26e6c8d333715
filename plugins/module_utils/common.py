# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The base module class, the common argument specs and the error types.

Every module of the collection builds a :class:`BackupModule`; the shared
logic below raises :class:`BackupError` subclasses, and only a module's
``main()`` turns one into ``fail_json`` through :meth:`BackupModule.fail_from_exception`.
"""

from __future__ import annotations

import os
import re
import traceback

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

# Options of modules that look at many sets (prune, info): which kinds and source.
SELECT_SPEC: dict = dict(
    kinds=dict(
        type="list",
        elements="str",
        default=[],
        choices=["mongo-full", "mongo-oplog", "redis-rdb", "redis-aof", "kafka-meta", "config"],
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

    def __init__(
        self,
        argument_spec: dict,
        *,
        writes: bool = False,
        reads: bool = False,
        restores: bool = False,
        selects: bool = False,
        storage: bool = True,
        libraries: tuple[str, ...] = (),
        **kwargs,
    ) -> None:
        spec = dict(STORAGE_SPEC) if storage else {}
        if writes:
            spec.update(WRITE_SPEC)
        if reads or restores:
            spec.update(READ_SPEC)
        if restores:
            spec.update(RESTORE_SPEC)
            kwargs["mutually_exclusive"] = [("backup_id", "before"), *kwargs.get("mutually_exclusive", ())]
        if selects:
            spec.update(SELECT_SPEC)
        spec.update(argument_spec)
        super().__init__(argument_spec=spec, **kwargs)
        missing = _import_errors()
        for name in libraries:
            try:
                __import__(name)
            except ImportError:
                missing[name] = (name, traceback.format_exc())
        for pip_name, exc in missing.values():
            self.fail_json(msg=missing_required_lib(pip_name), exception=exc)

    def open_storage(self):
        """The Storage named by ``storage_url`` and the S3 options."""
        from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage

        p = self.params
        return open_storage(
            p["storage_url"],
            endpoint_url=p.get("s3_endpoint_url"),
            access_key=p.get("aws_access_key_id"),
            secret_key=p.get("aws_secret_access_key"),
            session_token=p.get("aws_session_token"),
            region=p.get("aws_region"),
            ca_bundle=p.get("s3_ca_bundle"),
            validate_certs=p.get("validate_certs", True),
            sse=p.get("s3_sse"),
            sse_kms_key_id=p.get("s3_sse_kms_key_id"),
            object_lock_mode=p.get("s3_object_lock_mode"),
            object_lock_days=p.get("s3_object_lock_days"),
        )

    def write_options(self):
        """The compression and encryption a new backup set is written with.

        A set with neither age recipients nor S3 server-side encryption is refused when
        ``allow_unencrypted`` is false (what the playbooks pass), and warned about otherwise.
        """
        from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

        p = self.params
        if not p["encryption_recipients"] and not p.get("s3_sse"):
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

        The storage is only read (to prove it can be reached, as the real run needs); nothing is
        written. ``changed`` is true because a real run writes a new set; ``backup_id`` is empty
        because none was made; ``location`` is the path the new set's id would be added to.
        """
        storage = self.open_storage()
        storage.check()
        return dict(changed=True, backup_id="", kind=kind, location=f"{storage.url}/{kind}/{source}/")

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
        and traceback, so no cause is hidden.
        """
        try:
            result = work(self)
        except Exception as exc:  # noqa: BLE001  reported with its traceback, never swallowed
            self.fail_from_exception(exc, action)
        self.exit_json(**result)


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
