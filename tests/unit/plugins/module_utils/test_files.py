"""Selecting, archiving and safely restoring configuration files."""

import io
import os
import tarfile

import pytest

from ansible_collections.caas.backup.plugins.module_utils.common import (
    ConfigurationError,
    IntegrityError,
    SourceError,
)
from ansible_collections.caas.backup.plugins.module_utils.files import (
    DEFAULT_SECRETS,
    extract,
    matches,
    plan_restore,
    secrets_in,
    select,
    write_tar,
)


@pytest.mark.parametrize(
    "name,patterns,expected",
    [
        ("node_modules/x/y.js", ["node_modules"], True),
        ("services/api/node_modules/a", ["node_modules"], True),
        ("services/api/config/app.yml", ["services/*/config"], True),
        ("services/api/src/app.py", ["services/*/config"], False),
        ("dist", ["dist/"], True),
        ("distribution/a", ["dist"], False),
        ("app/.env", [".env"], True),
        ("app/.env.production", [".env.*"], True),
        ("keys/jwt.pem", ["keys"], True),
        ("docker-compose.yml", list(DEFAULT_SECRETS), False),
        ("tls/server.key", list(DEFAULT_SECRETS), True),
    ],
)
def test_matches(name, patterns, expected):
    assert matches(name, patterns) is expected


@pytest.fixture()
def site(tmp_path):
    root = tmp_path / "site"
    (root / "keys").mkdir(parents=True)
    (root / "services/api/config").mkdir(parents=True)
    (root / "services/api/node_modules/lib").mkdir(parents=True)
    (root / ".env").write_text("DB_PASSWORD=s3cret\n")
    (root / "keys/jwt.pem").write_text("-----BEGIN KEY-----\n")
    (root / "services/api/config/app.yml").write_text("port: 8080\n")
    (root / "services/api/node_modules/lib/index.js").write_text("x")
    (root / "docker-compose.yml").write_text("services: {}\n")
    os.chmod(root / "keys/jwt.pem", 0o600)
    os.symlink("config/app.yml", root / "services/api/current.yml")
    os.utime(root / ".env", (1_700_000_000, 1_700_000_000))
    return root


def archive(root, paths, exclude=()):
    selection = select(str(root), paths, list(exclude))
    out = io.BytesIO()
    write_tar(out, selection)
    out.seek(0)
    return selection, out


def test_select_walks_and_excludes(site):
    selection = archive(site, [".env", "keys", "services", "docker-compose.yml"], ["node_modules"])[0]
    assert "services/api/config/app.yml" in selection.names
    assert not any("node_modules" in n for n in selection.names)
    assert selection.files == 4
    assert secrets_in(selection, list(DEFAULT_SECRETS)) == [".env", "keys", "keys/jwt.pem"]


def test_select_refuses_missing_and_outside_paths(site):
    with pytest.raises(SourceError, match="missing.yml cannot be read"):
        select(str(site), ["missing.yml"], [])
    with pytest.raises(ConfigurationError, match="outside root"):
        select(str(site), ["../etc"], [])
    with pytest.raises(ConfigurationError, match="select no file"):
        select(str(site), ["services"], ["services"])


def test_restore_round_trip_keeps_content_modes_mtimes_and_links(site, tmp_path):
    data = archive(site, [".env", "keys", "services"], ["node_modules"])[1]
    dest = tmp_path / "dest"
    plan = plan_restore(io.BytesIO(data.getvalue()), str(dest), [])
    assert plan["update"] == [] and plan["same"] == [] and ".env" in plan["create"]
    extract(io.BytesIO(data.getvalue()), str(dest), set(plan["create"]))
    assert (dest / ".env").read_text() == "DB_PASSWORD=s3cret\n"
    assert os.stat(dest / "keys/jwt.pem").st_mode & 0o777 == 0o600
    assert os.stat(dest / ".env").st_mtime == 1_700_000_000
    assert os.readlink(dest / "services/api/current.yml") == "config/app.yml"
    again = plan_restore(io.BytesIO(data.getvalue()), str(dest), [])
    assert again["create"] == [] and again["update"] == []


def test_plan_detects_changed_content_and_mode(site, tmp_path):
    data = archive(site, [".env", "keys"])[1]
    dest = tmp_path / "dest"
    extract(
        io.BytesIO(data.getvalue()), str(dest), set(plan_restore(io.BytesIO(data.getvalue()), str(dest), [])["create"])
    )
    (dest / ".env").write_text("DB_PASSWORD=other\n")
    os.chmod(dest / "keys/jwt.pem", 0o644)
    plan = plan_restore(io.BytesIO(data.getvalue()), str(dest), [])
    assert sorted(plan["update"]) == [".env", "keys/jwt.pem"]


def test_only_restores_a_subset(site, tmp_path):
    data = archive(site, [".env", "keys", "docker-compose.yml"])[1]
    plan = plan_restore(io.BytesIO(data.getvalue()), str(tmp_path / "d"), ["keys"])
    assert plan["create"] == ["keys", "keys/jwt.pem"]


def evil_tar(*members):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = 2
                tar.addfile(info, io.BytesIO(b"hi"))
    return out.getvalue()


@pytest.mark.parametrize(
    "members,message",
    [
        ([("ok.txt", "file", ""), ("../escape.txt", "file", "")], "'../escape.txt' would land outside"),
        ([("/etc/passwd", "file", "")], "'/etc/passwd' would land outside"),
        ([("link", "sym", "/etc")], "links to '/etc'"),
        ([("a/link", "sym", "../../x")], "links to '../../x'"),
    ],
)
def test_members_outside_dest_are_refused_before_anything_is_written(tmp_path, members, message):
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(IntegrityError, match=message):
        plan_restore(io.BytesIO(evil_tar(*members)), str(dest), [])
    assert list(dest.iterdir()) == []


def test_member_through_an_existing_symlink_in_dest_is_refused(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(str(tmp_path), dest / "up")
    with pytest.raises(IntegrityError, match="through a link"):
        plan_restore(io.BytesIO(evil_tar(("up/x", "file", ""))), str(dest), [])


def test_garbage_is_not_a_tar(tmp_path):
    with pytest.raises(IntegrityError, match="not a valid tar"):
        plan_restore(io.BytesIO(b"\x01" * 2048), str(tmp_path), [])
