"""PostgreSQL from the machine's binaries, for the demo, the tests and the benchmarks.

A throw-away cluster on 127.0.0.1 (Debian's ``postgresql`` package: ``initdb``/``pg_ctl`` on
PATH or under ``/usr/lib/postgresql/<version>/bin``), stopped and deleted afterwards.
PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fraud_devtools.local import free_port


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed: apt-get install postgresql "
            "(the demo and the tests start their own server on 127.0.0.1)"
        )
    return found


@contextmanager
def postgres_server(port: int | None = None) -> Iterator[str]:
    """A throw-away PostgreSQL cluster; yields a ``postgresql://`` URL (trust auth, loopback)."""
    base = Path(tempfile.mkdtemp(prefix="fraud-pg-"))
    data, sockets = base / "data", base / "run"
    sockets.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chmod(base, 0o755)  # noqa: S103 - the postgres user must reach its data dir
        for path in (base, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = port or free_port()

    def run(*command: str) -> None:
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    try:
        run(_pg_bin("initdb"), "-D", str(data), "-U", "fraud", "--auth=trust", "-E", "UTF8")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off"
        log = str(base / "log")
        run(_pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", log, "-w", "start")
        try:
            yield f"postgresql://fraud@127.0.0.1:{port}/postgres"
        finally:
            run(_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def logins(owner_dsn: str, wanted: dict[str, str]) -> dict[str, str]:
    """Login roles (name -> group role) on the server of ``owner_dsn`` (a superuser: the
    schema's owner), created as the docs tell a DBA to; groups are created when missing.
    Returns name -> DSN on the same database. Idempotent (roles are per server)."""
    import psycopg

    base, database = owner_dsn.rsplit("/", 1)
    host = base.split("://", 1)[1].split("@", 1)[1]
    with psycopg.connect(owner_dsn, autocommit=True) as admin:
        for group in sorted(set(wanted.values())):
            if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (group,)).fetchone():
                admin.execute(f"CREATE ROLE {group} NOLOGIN")
        for login, group in wanted.items():
            if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone():
                admin.execute(f"CREATE ROLE {login} LOGIN IN ROLE {group}")
    return {login: f"postgresql://{login}@{host}/{database}" for login in wanted}
