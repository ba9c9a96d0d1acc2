"""A private PostgreSQL (and PgBouncer) per test, on a loopback port, that tests may stop.

Never touches the machine's own server: every instance lives in a temp directory of its
own, listens on 127.0.0.1 on a free port, and keeps its socket in that directory. Run as
root, the servers run as `postgres` (initdb and pgbouncer refuse root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import psycopg.sql

from tests.support import free_port

PG_USER = "postgres"


def _candidates() -> Iterator[Path]:
    if os.environ.get("PG_BIN"):
        yield Path(os.environ["PG_BIN"])
    yield Path("/usr/lib/postgresql/15/bin")
    yield from sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def pg_bin() -> Path | None:
    """The directory of initdb/pg_ctl/postgres (PostgreSQL 15 preferred), or None."""
    for path in _candidates():
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


def pg16_bin() -> Path | None:
    """PostgreSQL 16 from the `pgserver` package (a dependency): for 16-only behaviour."""
    try:
        import pgserver
    except ImportError:
        return None
    install = Path(pgserver.__file__).resolve().parent / "pginstall"
    if not (install / "bin" / "initdb").exists():
        return None
    if not _as_root() or _run("test", "-x", str(install / "bin" / "initdb")).returncode == 0:
        return install / "bin"
    # The virtualenv is in a directory the postgres user cannot enter (e.g. under /root):
    # use a copy it can read, made once. The binaries find their libraries through an
    # rpath of $ORIGIN/../../../pgserver.libs, so the copy keeps that layout.
    cache = Path(tempfile.gettempdir()) / "tasks-api-pg16"
    if not (cache / "pgserver" / "pginstall" / "bin" / "initdb").exists():
        staging = Path(tempfile.mkdtemp(prefix="tasks-api-pg16-"))
        shutil.copytree(install, staging / "pgserver" / "pginstall", symlinks=True)
        libs = install.parent.parent / "pgserver.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "pgserver.libs", symlinks=True)
        staging.chmod(0o755)
        shutil.rmtree(cache, ignore_errors=True)
        os.replace(staging, cache)
    return cache / "pgserver" / "pginstall" / "bin"


def pgbouncer_bin() -> str | None:
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )


def openssl_bin() -> str | None:
    return shutil.which("openssl")


def _as_root() -> bool:
    return os.geteuid() == 0


def can_run_servers() -> tuple[bool, str]:
    if pg_bin() is None:
        return False, "PostgreSQL server binaries (initdb, pg_ctl) not found"
    if _as_root():
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return False, "running as root and there is no 'postgres' user to run PostgreSQL"
        if shutil.which("runuser") is None:
            return False, "running as root without runuser"
    return True, ""


def _owned_tempdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if _as_root():
        entry = pwd.getpwnam(PG_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o700)
    return path


def _chown_tree(path: Path) -> None:
    if not _as_root():
        return
    entry = pwd.getpwnam(PG_USER)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _cmd(*args: str) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *args] if _as_root() else list(args)


def _run(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cmd(*args), capture_output=True, text=True, timeout=timeout, check=False, cwd="/"
    )


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# --- TLS material -------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    other_ca_cert: Path  # a CA that did not sign the server certificate


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr.strip()}")


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl(
        "req", "-x509", "-new", "-nodes",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", key.name, "-out", cert.name, "-days", "2", "-subj", f"/CN=tasks-api test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return key, cert


def make_tls_files(directory: Path) -> TlsFiles:
    """A self-signed CA and a server certificate for localhost / 127.0.0.1 signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _make_ca(directory, "ca")
    _, other_ca = _make_ca(directory, "other-ca")
    (directory / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n",
        encoding="utf-8",
    )
    _openssl(
        "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", ca_cert.name, "-CAkey", ca_key.name,
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
        cwd=directory,
    )  # fmt: skip
    return TlsFiles(ca_cert, directory / "server.crt", directory / "server.key", other_ca)


# --- PostgreSQL -----------------------------------------------------------------------------


class PgInstance:
    """initdb once, then start/stop/restart on the same port as often as a test needs."""

    def __init__(
        self,
        *,
        port: int | None = None,
        tls: TlsFiles | None = None,
        bin_dir: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        bin_dir = bin_dir or pg_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server binaries not found")
        self.bin = bin_dir
        self.port = port or free_port()
        self.tls = tls
        self.extra_settings = settings or {}
        self.base = _owned_tempdir("tasks-api-privpg-")
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"

    # lifecycle

    def init(self) -> PgInstance:
        done = _run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", PG_USER, "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.base}'",
            "max_connections = 100",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "shared_buffers = 32MB",
            "log_min_messages = warning",
            *(f"{k} = {v}" for k, v in self.extra_settings.items()),
        ]
        hba = ["local all all trust"]
        if self.tls is not None:
            tls_dir = self.base / "tls"
            tls_dir.mkdir()
            for src in (self.tls.server_cert, self.tls.server_key, self.tls.ca_cert):
                shutil.copy(src, tls_dir / src.name)
            (tls_dir / self.tls.server_key.name).chmod(0o600)
            _chown_tree(tls_dir)
            conf += [
                "ssl = on",
                f"ssl_cert_file = '{tls_dir / self.tls.server_cert.name}'",
                f"ssl_key_file = '{tls_dir / self.tls.server_key.name}'",
                f"ssl_ca_file = '{tls_dir / self.tls.ca_cert.name}'",
            ]
            # TCP only over TLS: a plain-text connection is refused by pg_hba.
            hba.append("hostssl all all 127.0.0.1/32 trust")
        else:
            hba.append("host all all 127.0.0.1/32 trust")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write("\n" + "\n".join(conf) + "\n")
        (self.data / "pg_hba.conf").write_text("\n".join(hba) + "\n", encoding="utf-8")
        _chown_tree(self.data)
        return self

    def start(self, *, timeout: float = 30.0) -> None:
        done = _run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(int(timeout)), "start",
            timeout=timeout + 10,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stdout.strip()} {self.log_tail()}")

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server; `immediate` is closest to a crash or a suspended compute."""
        if not (self.data / "postmaster.pid").exists():
            return
        _run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", timeout=60)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # addresses

    def url(
        self,
        dbname: str = "postgres",
        *,
        host: str = "127.0.0.1",
        user: str = PG_USER,
        **params: str,
    ) -> str:
        if self.tls is not None:
            params = {"sslmode": "verify-full", "sslrootcert": str(self.tls.ca_cert), **params}
        query = f"?{urlencode(params)}" if params else ""
        return f"postgresql://{user}@{host}:{self.port}/{dbname}{query}"

    def admin_url(self, dbname: str = "postgres") -> str:
        """Over the unix socket in our own directory: works whatever pg_hba says of TCP."""
        return f"postgresql://{PG_USER}@/{dbname}?host={self.base}&port={self.port}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        return name

    def execute(self, sql: str, params: Any = None, *, dbname: str = "postgres") -> list[Any]:
        with psycopg.connect(self.admin_url(dbname), autocommit=True) as conn:
            cur = conn.execute(sql, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description is not None else []


@contextlib.contextmanager
def private_postgres(
    *,
    tls: TlsFiles | None = None,
    start: bool = True,
    bin_dir: Path | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[PgInstance]:
    instance = PgInstance(tls=tls, bin_dir=bin_dir, settings=settings).init()
    try:
        if start:
            instance.start()
        yield instance
    finally:
        instance.cleanup()


# --- PgBouncer ------------------------------------------------------------------------------


class PgBouncer:
    """Debian's pgbouncer in front of a PostgreSQL on loopback, transaction pooling."""

    def __init__(
        self,
        *,
        backend_port: int,
        port: int | None = None,
        pool_mode: str = "transaction",
        pool_size: int = 3,
    ) -> None:
        binary = pgbouncer_bin()
        if binary is None:
            raise RuntimeError("pgbouncer not installed")
        self.binary = binary
        self.port = port or free_port()
        self.base = _owned_tempdir("tasks-api-pgbouncer-")
        self.log = self.base / "pgbouncer.log"
        self.proc: subprocess.Popen[bytes] | None = None
        (self.base / "userlist.txt").write_text(f'"{PG_USER}" ""\n', encoding="utf-8")
        (self.base / "pgbouncer.ini").write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host=127.0.0.1 port={backend_port}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    # The admin console (database `pgbouncer`) for PAUSE/RESUME in tests.
                    f"admin_users = {PG_USER}",
                    f"auth_file = {self.base / 'userlist.txt'}",
                    f"pool_mode = {pool_mode}",
                    # Fewer server connections than the service has clients: connections
                    # are shared between clients, as on Neon's pooled endpoint.
                    f"default_pool_size = {pool_size}",
                    "max_client_conn = 500",
                    "ignore_startup_parameters = extra_float_digits,options",
                    f"logfile = {self.log}",
                    f"pidfile = {self.base / 'pgbouncer.pid'}",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        _chown_tree(self.base)

    def start(self, *, timeout: float = 15.0) -> None:
        self.proc = subprocess.Popen(
            _cmd(self.binary, str(self.base / "pgbouncer.ini")),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"pgbouncer exited with {self.proc.returncode}: {self.log_tail()}"
                )
            if port_open(self.port):
                return
            time.sleep(0.1)
        raise TimeoutError(f"pgbouncer did not listen on {self.port}: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # runuser forwards SIGTERM to pgbouncer
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def admin(self, command: str) -> list[Any]:
        """Run a console command (`PAUSE db`, `RESUME db`, `SHOW POOLS`…) on PgBouncer.

        The console speaks only the simple query protocol: a ClientCursor sends that.
        """
        with psycopg.connect(
            f"postgresql://{PG_USER}@127.0.0.1:{self.port}/pgbouncer",
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
            connect_timeout=5,
        ) as conn:
            cur = conn.execute(command)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description is not None else []
