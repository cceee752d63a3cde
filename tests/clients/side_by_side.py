"""A throwaway PostgreSQL 15 cluster and a trafficdb server, side by side on free loopback ports, for the
differential tests (dml_diff.py, pg_dialect.py)."""

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time

import psycopg

PG_BIN = "/usr/lib/postgresql/15/bin"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_as_postgres(cmd, owned):
    if os.getuid() == 0:
        shutil.chown(owned, "postgres")
        return subprocess.call(["su", "postgres", "-c", cmd])
    return subprocess.call(["sh", "-c", cmd])


class Reference:
    """A throwaway PostgreSQL 15 cluster."""

    def __init__(self, work):
        self.dir = os.path.join(work, "pg")
        os.makedirs(self.dir)
        self.port = free_port()
        if run_as_postgres(f"{PG_BIN}/initdb -D {self.dir} -A trust -U postgres --no-sync >/dev/null", self.dir):
            raise RuntimeError("initdb failed")
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        if run_as_postgres(f"{PG_BIN}/pg_ctl -D {self.dir} -o '{opts}' -l {self.dir}/log -w start >/dev/null",
                           self.dir):
            raise RuntimeError("pg_ctl start failed")

    def connect(self):
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                               autocommit=True)

    def stop(self):
        run_as_postgres(f"{PG_BIN}/pg_ctl -D {self.dir} -m fast -w stop >/dev/null", self.dir)


class Trafficdb:
    """A trafficdb server on a data directory; restartable."""

    def __init__(self, binary, work):
        self.binary = binary
        self.data = os.path.join(work, "trafficdb")
        self.log = open(os.path.join(work, "trafficdb.log"), "ab")
        self.proc = None
        self.start()

    def start(self):
        self.port = free_port()
        self.proc = subprocess.Popen([self.binary, "serve", "--empty", "-d", self.data,
                                      "--listen", f"127.0.0.1:{self.port}"], stdout=self.log, stderr=self.log)
        for _ in range(200):
            try:
                self.connect().close()
                return
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise RuntimeError("trafficdb did not start")

    def connect(self):
        return psycopg.connect(host="127.0.0.1", port=self.port, dbname="trafficdb", autocommit=True)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


@contextlib.contextmanager
def servers(binary, prefix):
    """A PostgreSQL 15 cluster and a trafficdb server (`binary`) in a scratch directory, both stopped
    and the directory removed on the way out."""
    work = tempfile.mkdtemp(prefix=prefix)
    os.chmod(work, 0o755)
    pg = tdb = None
    try:
        pg = Reference(work)
        tdb = Trafficdb(binary, work)
        yield pg, tdb
    finally:
        if tdb:
            tdb.stop()
        if pg:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)
