# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    """Options every caas.backup module shares; C(write) and C(read) add the set-writing and set-reading ones."""

    DOCUMENTATION = r"""
options:
  storage_url:
    description:
      - Where backup sets live. V(file:///path) for a local directory, V(s3://bucket/prefix) for S3-compatible
        object storage.
      - Falls back to the E(CAAS_BACKUP_STORAGE_URL) environment variable.
    type: str
    required: true
  s3_endpoint_url:
    description:
      - URL of an S3-compatible server (MinIO, Ceph, moto). Omit for AWS S3.
      - Falls back to E(CAAS_S3_ENDPOINT), E(AWS_ENDPOINT_URL_S3) or E(AWS_ENDPOINT_URL).
    type: str
  aws_access_key_id:
    description:
      - S3 access key. Falls back to E(AWS_ACCESS_KEY_ID); otherwise boto3's usual credential chain applies.
    type: str
    aliases: [access_key]
  aws_secret_access_key:
    description:
      - S3 secret key. Falls back to E(AWS_SECRET_ACCESS_KEY). Never logged.
    type: str
    aliases: [secret_key]
  aws_session_token:
    description:
      - S3 session token for temporary credentials. Falls back to E(AWS_SESSION_TOKEN).
    type: str
  aws_region:
    description:
      - S3 region. Falls back to E(AWS_REGION) or E(AWS_DEFAULT_REGION); V(us-east-1) when unset.
    type: str
  s3_ca_bundle:
    description:
      - CA bundle to verify the S3 endpoint's TLS certificate with.
    type: path
  validate_certs:
    description:
      - Verify the S3 endpoint's TLS certificate.
    type: bool
    default: true
requirements:
  - python >= 3.10
  - boto3
  - zstandard
  - pyrage
  - cryptography (only to sign or check manifest signatures, with C(signing_key) or C(trusted_signers))
"""

    WRITE = r"""
options:
  compression:
    description:
      - Compression of data objects. V(zstd) and V(gzip) files open with C(zstd -d) and C(gunzip).
    type: str
    default: zstd
    choices: [zstd, gzip, none]
  compression_level:
    description:
      - Compression level - 1 to 22 for zstd, 0 to 9 for gzip, none for O(compression=none); the library
        default (zstd 3, gzip 6) when unset.
    type: int
  encryption_recipients:
    description:
      - age X25519 public keys (V(age1...)) to encrypt data objects to. The backup host needs no secret key;
        C(age -d -i key.txt) opens the objects.
      - Falls back to E(CAAS_AGE_RECIPIENTS) (comma-separated).
    type: list
    elements: str
    default: []
  source_name:
    description:
      - Stable, credential-free name of what is backed up; the storage path segment after the kind.
    type: str
  tags:
    description:
      - Labels stored in the manifest. Sets tagged V(keep) are never pruned.
    type: list
    elements: str
    default: []
  s3_sse:
    description:
      - S3 server-side encryption, in addition to client-side encryption.
    type: str
    choices: [AES256, aws:kms]
  s3_sse_kms_key_id:
    description:
      - KMS key id for O(s3_sse=aws:kms).
    type: str
  s3_object_lock_mode:
    description:
      - Object Lock retention mode for new objects; the bucket must have Object Lock enabled.
    type: str
    choices: [GOVERNANCE, COMPLIANCE]
  s3_object_lock_days:
    description:
      - Days new objects stay locked (1-36500); goes with O(s3_object_lock_mode).
    type: int
  allow_unencrypted:
    description:
      - Whether a set may be written with neither O(encryption_recipients) nor O(s3_sse). When V(true) the module
        warns that it writes plaintext; when V(false) it refuses before anything is written. The playbooks pass
        V(false) unless C(caas_backup_allow_unencrypted) is set.
    type: bool
    default: true
  signing_key:
    description:
      - Unencrypted OpenSSH ed25519 private key (C(ssh-keygen -t ed25519 -N '')) that signs the set's manifest,
        which holds every object's sha256. The signature is written as C(manifest.json.sig), in the format of
        C(ssh-keygen -Y sign -n caas-backup), just before C(manifest.json). Never logged.
      - Restores and verifications given C(trusted_signers) accept only sets signed by one of those keys.
      - Falls back to E(CAAS_SIGNING_KEY). Mutually exclusive with O(signing_key_file).
    type: str
  signing_key_file:
    description:
      - File holding the O(signing_key).
      - Falls back to E(CAAS_SIGNING_KEY_FILE).
    type: path
"""

    READ = r"""
options:
  encryption_identity:
    description:
      - age X25519 identity (V(AGE-SECRET-KEY-1...)) to decrypt encrypted backups. Never logged.
      - Falls back to E(CAAS_AGE_IDENTITY).
    type: str
  encryption_identity_file:
    description:
      - File holding age identities, one per line (the format of C(age-keygen)).
      - Falls back to E(CAAS_AGE_IDENTITY_FILE).
    type: path
  source_name:
    description:
      - Source whose backups to read; needed only when several sources have backups of the kind.
    type: str
  trusted_signers:
    description:
      - OpenSSH ed25519 public keys (V(ssh-ed25519 AAAA... comment)) of the backup side's C(signing_key).
        When given (here or in O(trusted_signers_file)), a set whose C(manifest.json.sig) is missing or not made
        by one of them over its C(manifest.json) is refused by restores and fails verification.
      - When neither option is given, signatures are not checked and the module says so in a warning.
      - Falls back to E(CAAS_TRUSTED_SIGNERS) (comma-separated).
    type: list
    elements: str
    default: []
  trusted_signers_file:
    description:
      - File of trusted public keys, one per line, in C(.pub) or C(ssh-keygen) allowed_signers format
        (principals and options before the key are ignored; blank and V(#) lines are skipped).
      - Falls back to E(CAAS_TRUSTED_SIGNERS_FILE).
    type: path
"""

    RESTORE = r"""
options:
  backup_id:
    description:
      - Backup set to restore. The latest complete set when omitted.
    type: str
  before:
    description:
      - With no O(backup_id), restore the latest set taken at or before this ISO 8601 time (1970 to 2100).
    type: str
"""

    TARGET = r"""
options:
  check_target:
    description:
      - In check mode, whether to connect to the target and plan what would change there too. V(false) checks
        the backup side only - the set that would be restored, its signature and that the given identity opens
        it - and never contacts the target; C(dr.yml) assesses a recovery so before the servers are provisioned.
    type: bool
    default: true
"""

    SELECT = r"""
options:
  kinds:
    description:
      - Kinds of backup sets to look at; all when empty.
    type: list
    elements: str
    choices: [mongo-full, mongo-oplog, redis-rdb, redis-aof, kafka-meta, kafka-messages, config]
    default: []
  source_name:
    description:
      - Look only at this source's sets; every source when omitted.
    type: str
"""

    LOCATIONS = r"""
options:
  storage_fallback_urls:
    description:
      - Other storage locations holding copies of the backups (made by M(caas.backup.backup_copy)), tried in this
        order after O(storage_url) - the primary region being gone is the case they are for.
      - The restore reads from the first location that holds a complete set of what is asked (with
        O(trusted_signers), one signed by them), every object its manifest names present at its recorded size; a
        location that cannot be reached, or lacks such a set, is skipped with a warning naming it. The result's
        RV(storage_url) says which location was used. Each object's sha256 is checked as it is read.
      - Every location uses the same S3 options (O(s3_endpoint_url), credentials, O(aws_region)).
      - Falls back to E(CAAS_BACKUP_STORAGE_FALLBACK_URLS) (comma-separated).
    type: list
    elements: str
    default: []
"""
