"""SSHSIG manifest signatures: round trips, refusals, and interop with the stock ``ssh-keygen -Y``."""

import re
import shutil
import subprocess

import pytest

from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError
from ansible_collections.caas.backup.plugins.module_utils.signing import (
    NAMESPACE,
    SignatureError,
    SigningKey,
    parse_trusted,
    verify,
)

SSH_KEYGEN = shutil.which("ssh-keygen")
MESSAGE = b'{\n "format_version": 2,\n "kind": "config"\n}'


def keygen(tmp_path, name="key", key_type="ed25519", passphrase=""):
    """A fresh key pair made by the stock ssh-keygen: (private key text, public key line, path)."""
    path = tmp_path / name
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", key_type, "-N", passphrase, "-C", f"{name}@caas", "-f", str(path)], check=True
    )
    return path.read_text(), (tmp_path / f"{name}.pub").read_text().strip(), path


pytestmark = pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen (openssh-client) is not installed")


def test_round_trip_names_the_signer(tmp_path):
    private, public = keygen(tmp_path)[:2]
    key = SigningKey.from_openssh(private)
    trusted = parse_trusted([public], "trusted_signers")
    signer = verify(key.sign(MESSAGE), MESSAGE, trusted)
    assert signer.label == f"{key.fingerprint} (key@caas)"
    assert key.public_line() == " ".join(public.split()[:2])


def test_tampered_message_is_refused(tmp_path):
    private, public = keygen(tmp_path)[:2]
    armored = SigningKey.from_openssh(private).sign(MESSAGE)
    tampered = MESSAGE.replace(b"config", b"confih")
    with pytest.raises(SignatureError, match="does not match the signed data"):
        verify(armored, tampered, parse_trusted([public], "t"))


def test_tampered_signature_is_refused(tmp_path):
    private, public = keygen(tmp_path)[:2]
    armored = SigningKey.from_openssh(private).sign(MESSAGE)
    lines = armored.splitlines()
    # the last body line holds the end of the Ed25519 signature bytes
    body = lines[-2]
    lines[-2] = body[:5] + ("A" if body[5] != "A" else "B") + body[6:]
    with pytest.raises(SignatureError, match="does not match the signed data"):
        verify("\n".join(lines), MESSAGE, parse_trusted([public], "t"))


def test_signature_by_an_untrusted_key_is_refused(tmp_path):
    private = keygen(tmp_path, "attacker")[0]
    trusted_public = keygen(tmp_path, "backup")[1]
    key = SigningKey.from_openssh(private)
    with pytest.raises(SignatureError, match=re.escape(f"made by {key.fingerprint}, which is not a trusted signer")):
        verify(key.sign(MESSAGE), MESSAGE, parse_trusted([trusted_public], "t"))


def test_other_namespace_and_garbage_are_refused(tmp_path):
    private, public = keygen(tmp_path)[:2]
    key, trusted = SigningKey.from_openssh(private), parse_trusted([public], "t")
    with pytest.raises(SignatureError, match="namespace 'file', not 'caas-backup'"):
        verify(key.sign(MESSAGE, namespace="file"), MESSAGE, trusted)
    with pytest.raises(SignatureError, match="not an armored SSH signature"):
        verify("hello", MESSAGE, trusted)
    with pytest.raises(SignatureError, match="truncated"):
        verify("-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n", MESSAGE, trusted)


def test_our_signature_verifies_with_stock_ssh_keygen(tmp_path):
    private, public = keygen(tmp_path)[:2]
    signature = tmp_path / "manifest.json.sig"
    signature.write_text(SigningKey.from_openssh(private).sign(MESSAGE))
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'backup@caas namespaces="{NAMESPACE}" {public}\n')
    args = [SSH_KEYGEN, "-Y", "verify", "-f", str(allowed), "-I", "backup@caas", "-n", NAMESPACE, "-s", str(signature)]
    good = subprocess.run(args, input=MESSAGE, capture_output=True, check=False)
    assert good.returncode == 0, good.stderr
    assert b"Good" in good.stdout
    bad = subprocess.run(args, input=MESSAGE + b" ", capture_output=True, check=False)
    assert bad.returncode != 0


def test_stock_ssh_keygen_signature_verifies_here(tmp_path):
    public, path = keygen(tmp_path)[1:]
    message = tmp_path / "manifest.json"
    message.write_bytes(MESSAGE)
    subprocess.run([SSH_KEYGEN, "-Y", "sign", "-q", "-f", str(path), "-n", NAMESPACE, str(message)], check=True)
    armored = (tmp_path / "manifest.json.sig").read_text()
    allowed = ["# signers\n", f"backup@caas {public}"]
    assert verify(armored, MESSAGE, parse_trusted(allowed, "allowed_signers")).comment == "key@caas"
    with pytest.raises(SignatureError):
        verify(armored, MESSAGE + b"\n", parse_trusted(allowed, "allowed_signers"))


def test_unusable_private_keys_are_clear_errors_that_never_quote_the_key(tmp_path):
    encrypted = keygen(tmp_path, "locked", passphrase="secret-pass")[0]
    with pytest.raises(ConfigurationError, match="signing_key is not an unencrypted .*passphrase-protected") as err:
        SigningKey.from_openssh(encrypted)
    assert encrypted.splitlines()[1] not in str(err.value)
    rsa = keygen(tmp_path, "rsa", key_type="rsa")[0]
    with pytest.raises(ConfigurationError, match="not an ed25519 key"):
        SigningKey.from_openssh(rsa, "signing_key_file")
    with pytest.raises(ConfigurationError, match="not an OpenSSH key"):
        SigningKey.from_openssh("AAAA-not-a-key")


def test_trusted_signers_lines_are_checked(tmp_path):
    public = keygen(tmp_path)[1]
    rsa_public = keygen(tmp_path, "rsa", key_type="rsa")[1]
    assert len(parse_trusted(["", "# comment", public, f"ops {public}"], "f")) == 2
    with pytest.raises(ConfigurationError, match="f line 2 holds no ssh-ed25519 public key"):
        parse_trusted([public, rsa_public], "f")
    with pytest.raises(ConfigurationError, match="f line 1 holds a malformed ssh-ed25519 public key"):
        parse_trusted(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC"], "f")
