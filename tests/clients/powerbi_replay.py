"""Power BI's PostgreSQL connector (Npgsql 4.0.17) replayed over a raw socket against a trafficdb server.

Usage: powerbi_replay.py HOST PORT

.NET is not needed: this speaks the PostgreSQL protocol itself (standard library only) and sends
what Npgsql 4.0.17 sends, in the same message sequence, then checks every answer the way Npgsql
reads it:

- SSLRequest (answered `N`), then the startup parameters Npgsql sends (user, client_encoding,
  database, application_name), and the ParameterStatus / BackendKeyData it needs;
- the type-loading statements of `PostgresDatabaseInfo.cs`, sent as Npgsql sends every command: one
  Parse / Bind / Describe(portal) / Execute per statement, one Sync, text results
  (`AllResultTypesAreUnknown`). The loaded types are rebuilt as Npgsql does; every later result
  column must have a type among them, or Npgsql falls back to a handler that cannot read binary;
- `DISCARD ALL` as a simple Query pipelined before the next Parse when a pooled connection is reused;
- the navigator's `information_schema` queries and Power Query's folded SQL, with binary results
  (Bind result format 1), several statements pipelined before one Sync, binary values decoded;
- error-until-Sync recovery, and a CancelRequest on a second socket.

Prints one line per check and a `test result:` line; exits non-zero if any check failed.
"""

import datetime as dt
import decimal
import os
import socket
import struct
import sys
import time
import traceback

HOST, PORT = sys.argv[1], int(sys.argv[2])
CLIENT = "power bi (npgsql 4.0.17 replay)"
PG_EPOCH = dt.datetime(2000, 1, 1)
TABLE = "pbi_req"
# PostgreSQL itself (to check the replay) has no time column option: REPLAY_TABLE_OPTIONS="" there.
TABLE_OPTIONS = os.environ.get("REPLAY_TABLE_OPTIONS", " WITH (time_column = 'ts')")
T0 = dt.datetime(2024, 1, 1, 12, 0, 0)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# ---------------------------------------------------------------------------------------------
# The protocol


class ServerError(Exception):
    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('C')} {fields.get('M')}")


def cstr(s):
    return s.encode() + b"\0"


class Message:
    """One backend message: its type byte and payload."""

    def __init__(self, kind, payload):
        self.kind = kind
        self.payload = payload

    def __repr__(self):
        return f"{self.kind}({self.payload[:60]!r})"


class Conn:
    """A connection that buffers frontend messages and sends them together (Npgsql writes a whole
    command into its buffer and flushes once), then reads backend messages one by one."""

    def __init__(self, params, ssl_request=True):
        self.sock = socket.create_connection((HOST, PORT), timeout=60)
        self.rbuf = b""
        self.out = []
        self.status = {}
        if ssl_request:
            # Npgsql with SslMode=Prefer: SSLRequest, then plain text after `N`.
            self.sock.sendall(struct.pack("!ii", 8, 80877103))
            answer = self._recv_exact(1)
            check(answer == b"N", f"SSLRequest answered {answer!r}, expected exactly N")
        body = struct.pack("!i", 196608) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        self.pid = self.key = None
        while True:
            m = self.read()
            if m.kind == "R":
                (code,) = struct.unpack("!i", m.payload[:4])
                check(code == 0, f"authentication {code} requested; the replay expects trust")
            elif m.kind == "S":
                k, v, _ = m.payload.split(b"\0", 2)
                self.status[k.decode()] = v.decode()
            elif m.kind == "K":
                self.pid, self.key = struct.unpack("!i", m.payload[:4])[0], m.payload[4:]
            elif m.kind == "E":
                raise ServerError(parse_fields(m.payload))
            elif m.kind == "Z":
                check(m.payload == b"I", f"ReadyForQuery status {m.payload!r} after startup")
                break
            elif m.kind != "N":
                raise AssertionError(f"unexpected message during startup: {m}")

    def _recv_exact(self, n):
        while len(self.rbuf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.rbuf += chunk
        data, self.rbuf = self.rbuf[:n], self.rbuf[n:]
        return data

    def read(self):
        head = self._recv_exact(5)
        kind = chr(head[0])
        (length,) = struct.unpack("!i", head[1:])
        return Message(kind, self._recv_exact(length - 4))

    def _msg(self, kind, body):
        self.out.append(kind.encode() + struct.pack("!i", len(body) + 4) + body)

    def query(self, sql):
        self._msg("Q", cstr(sql))

    def parse(self, sql, name="", oids=()):
        self._msg("P", cstr(name) + cstr(sql) + struct.pack("!h", len(oids)) + b"".join(struct.pack("!i", o) for o in oids))

    def bind(self, result_format, portal="", stmt="", params=()):
        """Npgsql 4.0's Bind: text parameters (format count 0), one result format code for all
        columns: 0 when all result types are unknown, else 1 (binary)."""
        body = cstr(portal) + cstr(stmt) + struct.pack("!h", 0) + struct.pack("!h", len(params))
        for p in params:
            body += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
        body += struct.pack("!hh", 1, result_format)
        self._msg("B", body)

    def describe_portal(self, portal=""):
        self._msg("D", b"P" + cstr(portal))

    def execute(self, portal="", max_rows=0):
        self._msg("E", cstr(portal) + struct.pack("!i", max_rows))

    def sync(self):
        self._msg("S", b"")

    def command(self, sql, result_format=1):
        """One statement as NpgsqlCommand writes it (non-prepared): Parse, Bind, Describe portal,
        Execute. The caller adds Sync after the last statement of the command."""
        self.parse(sql)
        self.bind(result_format)
        self.describe_portal()
        self.execute()

    def flush(self):
        self.sock.sendall(b"".join(self.out))
        self.out = []

    def until_ready(self):
        """Every message up to and including ReadyForQuery."""
        msgs = []
        while True:
            m = self.read()
            msgs.append(m)
            if m.kind == "Z":
                return msgs

    def close(self):
        try:
            self.sock.sendall(b"X" + struct.pack("!i", 4))
        finally:
            self.sock.close()


def parse_fields(payload):
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode()
    return fields


class Column:
    def __init__(self, name, table_oid, attnum, type_oid, typlen, typmod, fmt):
        self.name, self.table_oid, self.attnum = name, table_oid, attnum
        self.type_oid, self.typlen, self.typmod, self.format = type_oid, typlen, typmod, fmt


def row_description(payload):
    (n,) = struct.unpack("!h", payload[:2])
    pos, cols = 2, []
    for _ in range(n):
        end = payload.index(b"\0", pos)
        name = payload[pos:end].decode()
        pos = end + 1
        cols.append(Column(name, *struct.unpack("!ihihih", payload[pos : pos + 18])))
        pos += 18
    return cols


def data_row(payload):
    (n,) = struct.unpack("!h", payload[:2])
    pos, values = 2, []
    for _ in range(n):
        (length,) = struct.unpack("!i", payload[pos : pos + 4])
        pos += 4
        if length < 0:
            values.append(None)
        else:
            values.append(payload[pos : pos + length])
            pos += length
    return values


def numeric_from_binary(b):
    ndigits, weight, sign, dscale = struct.unpack("!hhHh", b[:8])
    digits = struct.unpack(f"!{ndigits}h", b[8 : 8 + 2 * ndigits])
    check(sign in (0x0000, 0x4000), f"numeric sign {sign:#x}")
    value = decimal.Decimal(0)
    for i, d in enumerate(digits):
        check(0 <= d < 10000, f"numeric digit {d}")
        value += decimal.Decimal(d).scaleb(4 * (weight - i))
    value = -value if sign == 0x4000 else value
    return value.quantize(decimal.Decimal(1).scaleb(-dscale)) if dscale else value


def decode_binary(oid, b):
    """A value in PostgreSQL's binary format, decoded as Npgsql 4.0's handler for the type reads it.
    Also checks the encoding's length."""
    fixed = {16: 1, 20: 8, 21: 2, 23: 4, 26: 4, 700: 4, 701: 8, 1082: 4, 1083: 8, 1114: 8, 1184: 8, 1186: 16}
    if oid in fixed:
        check(len(b) == fixed[oid], f"type {oid}: {len(b)} bytes in binary, expected {fixed[oid]}")
    if oid == 16:
        check(b in (b"\x00", b"\x01"), f"bool {b!r}")
        return b == b"\x01"
    if oid in (20, 21, 23):
        return int.from_bytes(b, "big", signed=True)
    if oid == 26:
        return int.from_bytes(b, "big", signed=False)
    if oid == 700:
        return struct.unpack("!f", b)[0]
    if oid == 701:
        return struct.unpack("!d", b)[0]
    if oid in (25, 1043, 19, 1042):
        return b.decode("utf-8")
    if oid == 17:
        return bytes(b)
    if oid in (1114, 1184):
        # integer_datetimes: microseconds since 2000-01-01 (UTC for timestamptz)
        return PG_EPOCH + dt.timedelta(microseconds=struct.unpack("!q", b)[0])
    if oid == 1082:
        return PG_EPOCH.date() + dt.timedelta(days=struct.unpack("!i", b)[0])
    if oid == 1083:
        return struct.unpack("!q", b)[0]
    if oid == 1186:
        return struct.unpack("!qii", b)
    if oid == 1700:
        return numeric_from_binary(b)
    raise AssertionError(f"no binary decoder for type OID {oid}")


def decode_text(oid, b):
    return b.decode("utf-8")


class Result:
    """One statement's answer in an extended-protocol exchange."""

    def __init__(self):
        self.columns = None
        self.rows = []
        self.tag = None
        self.error = None


def results(msgs):
    """Splits the messages of a pipelined exchange into per-statement results, checking the order
    PostgreSQL replies in: ParseComplete, BindComplete, RowDescription or NoData, DataRow...,
    CommandComplete (or ErrorResponse, after which nothing until ReadyForQuery)."""
    out, cur, stage = [], None, None
    for m in msgs:
        if m.kind == "1":
            check(stage in (None, "done"), f"ParseComplete out of order ({stage})")
            cur = Result()
            out.append(cur)
            stage = "parsed"
        elif m.kind == "2":
            check(stage == "parsed", f"BindComplete out of order ({stage})")
            stage = "bound"
        elif m.kind == "T":
            check(stage == "bound", f"RowDescription out of order ({stage})")
            cur.columns = row_description(m.payload)
            stage = "described"
        elif m.kind == "n":
            check(stage == "bound", f"NoData out of order ({stage})")
            cur.columns = []
            stage = "described"
        elif m.kind == "D":
            check(stage == "described" and cur.columns, f"DataRow out of order ({stage})")
            values = data_row(m.payload)
            check(len(values) == len(cur.columns), "DataRow width differs from RowDescription")
            cur.rows.append(
                [
                    None
                    if v is None
                    else (decode_binary(c.type_oid, v) if c.format == 1 else decode_text(c.type_oid, v))
                    for c, v in zip(cur.columns, values)
                ]
            )
        elif m.kind == "C":
            check(stage == "described", f"CommandComplete out of order ({stage})")
            cur.tag = m.payload.rstrip(b"\0").decode()
            stage = "done"
        elif m.kind == "E":
            if cur is None or stage == "done":
                cur = Result()
                out.append(cur)
            cur.error = parse_fields(m.payload)
            stage = "error"
        elif m.kind == "Z":
            check(stage in ("done", "error"), f"ReadyForQuery after an unfinished statement ({stage})")
        elif m.kind not in ("N", "S"):
            raise AssertionError(f"unexpected message {m}")
    return out


def ok(r, what):
    check(r.error is None, f"{what}: {r.error}")
    return r


# ---------------------------------------------------------------------------------------------
# Npgsql 4.0.17's type loading, verbatim from src/Npgsql/PostgresDatabaseInfo.cs (GenerateTypesQuery
# with withRange, withEnum and withEnumSortOrder true for a server >= 9.1, loadTableComposites false).
# NpgsqlCommand splits the text at the semicolons into three statements (whitespace after a
# semicolon is skipped, the first statement keeps its leading newline).

TYPES_QUERY = """
/*** Load all supported types ***/
SELECT ns.nspname, a.typname, a.oid, a.typrelid, a.typbasetype,
CASE WHEN pg_proc.proname='array_recv' THEN 'a' ELSE a.typtype END AS type,
CASE
  WHEN pg_proc.proname='array_recv' THEN a.typelem
  WHEN a.typtype='r' THEN rngsubtype
  ELSE 0
END AS elemoid,
CASE
  WHEN pg_proc.proname IN ('array_recv','oidvectorrecv') THEN 3    /* Arrays last */
  WHEN a.typtype='r' THEN 2                                        /* Ranges before */
  WHEN a.typtype='d' THEN 1                                        /* Domains before */
  ELSE 0                                                           /* Base types first */
END AS ord
FROM pg_type AS a
JOIN pg_namespace AS ns ON (ns.oid = a.typnamespace)
JOIN pg_proc ON pg_proc.oid = a.typreceive
LEFT OUTER JOIN pg_class AS cls ON (cls.oid = a.typrelid)
LEFT OUTER JOIN pg_type AS b ON (b.oid = a.typelem)
LEFT OUTER JOIN pg_class AS elemcls ON (elemcls.oid = b.typrelid)
LEFT OUTER JOIN pg_range ON (pg_range.rngtypid = a.oid) 
WHERE
  a.typtype IN ('b', 'r', 'e', 'd') OR         /* Base, range, enum, domain */
  (a.typtype = 'c' AND cls.relkind='c') OR /* User-defined free-standing composites (not table composites) by default */
  (pg_proc.proname='array_recv' AND (
    b.typtype IN ('b', 'r', 'e', 'd') OR       /* Array of base, range, enum, domain */
    (b.typtype = 'p' AND b.typname IN ('record', 'void')) OR /* Arrays of special supported pseudo-types */
    (b.typtype = 'c' AND elemcls.relkind='c')  /* Array of user-defined free-standing composites (not table composites) */
  )) OR
  (a.typtype = 'p' AND a.typname IN ('record', 'void'))  /* Some special supported pseudo-types */
ORDER BY ord"""

COMPOSITES_QUERY = """/*** Load field definitions for (free-standing) composite types ***/
SELECT typ.oid, att.attname, att.atttypid
FROM pg_type AS typ
JOIN pg_namespace AS ns ON (ns.oid = typ.typnamespace)
JOIN pg_class AS cls ON (cls.oid = typ.typrelid)
JOIN pg_attribute AS att ON (att.attrelid = typ.typrelid)
WHERE
  (typ.typtype = 'c' AND cls.relkind='c') AND
  attnum > 0 AND     /* Don't load system attributes */
  NOT attisdropped
ORDER BY typ.oid, att.attnum"""

ENUMS_QUERY = """/*** Load enum fields ***/
SELECT pg_type.oid, enumlabel
FROM pg_enum
JOIN pg_type ON pg_type.oid=enumtypid
ORDER BY oid, enumsortorder"""

# (name, OID, receive function) of the built-in types results here can have, as PostgreSQL has them.
BUILTIN_TYPES = [
    ("bool", 16, "boolrecv"),
    ("bytea", 17, "bytearecv"),
    ("int8", 20, "int8recv"),
    ("int2", 21, "int2recv"),
    ("int4", 23, "int4recv"),
    ("text", 25, "textrecv"),
    ("oid", 26, "oidrecv"),
    ("float4", 700, "float4recv"),
    ("float8", 701, "float8recv"),
    ("varchar", 1043, "varcharrecv"),
    ("date", 1082, "date_recv"),
    ("time", 1083, "time_recv"),
    ("timestamp", 1114, "timestamp_recv"),
    ("timestamptz", 1184, "timestamptz_recv"),
    ("interval", 1186, "interval_recv"),
    ("numeric", 1700, "numeric_recv"),
]
BUILTIN_ARRAYS = [("_bool", 1000, 16), ("_int4", 1007, 23), ("_int8", 1016, 20), ("_text", 1009, 25), ("_float8", 1022, 701)]

# What Npgsql 4.0 knows after connecting: OID -> type name (filled by the type-loading check).
LOADED = {}


def load_types(c):
    """Rebuilds the type list the way PostgresDatabaseInfo.LoadBackendTypes reads the three result
    sets; raises where Npgsql would throw."""
    for sql in (TYPES_QUERY, COMPOSITES_QUERY, ENUMS_QUERY):
        c.command(sql, result_format=0)
    c.sync()
    c.flush()
    types_r, comps_r, enums_r = results(c.until_ready())
    ok(types_r, "type loading")
    ok(comps_r, "composite fields")
    ok(enums_r, "enum labels")
    check(
        [col.name for col in types_r.columns]
        == ["nspname", "typname", "oid", "typrelid", "typbasetype", "type", "elemoid", "ord"],
        [col.name for col in types_r.columns],
    )
    check(all(col.format == 0 for col in types_r.columns), "type loading results must be text")
    check(types_r.tag == f"SELECT {len(types_r.rows)}", types_r.tag)
    by_oid = {}
    for nspname, typname, oid, _typrelid, typbasetype, typ, elemoid, _ord in types_r.rows:
        check(None not in (nspname, typname, oid, typ), f"NULL in a type row: {typname}")
        oid = int(oid)  # Convert.ToUInt32 on the text
        check(oid != 0, f"type {typname} has OID 0")
        kind = typ[0]
        if kind in ("b", "p", "e", "c"):
            by_oid[oid] = (nspname, typname, kind, None)
        elif kind in ("a", "r"):
            elem = int(elemoid)
            check(elem > 0, f"{typname}: element OID {elemoid}")
            # Npgsql skips (with a trace) arrays and ranges whose element it has not loaded yet.
            if elem in by_oid:
                by_oid[oid] = (nspname, typname, kind, elem)
        elif kind == "d":
            base = int(typbasetype)
            if base in by_oid:
                by_oid[oid] = (nspname, typname, kind, base)
        else:
            raise AssertionError(f"Unknown typtype for type '{typname}' in pg_type: {kind}")
    for oid, _name, typid in comps_r.rows:
        check(int(oid) in by_oid, f"composite field of an unknown type {oid}")
    for oid, _label in enums_r.rows:
        check(int(oid) in by_oid, f"enum label of an unknown type {oid}")
    return by_oid


# ---------------------------------------------------------------------------------------------
# The checks


def power_bi_params(application_name=None):
    params = [("user", "powerbi"), ("client_encoding", "UTF8"), ("database", "trafficdb")]
    if application_name:
        params.append(("application_name", application_name))
    return params


def check_startup():
    c = Conn(power_bi_params("PowerBIReplay"))
    s = c.status
    version = s.get("server_version", "")
    digits = version.split(" ")[0].split(".")
    check(len(digits) >= 2 and digits[0].isdigit() and digits[1][:1].isdigit(), f"server_version {version!r}")
    major, minor = int(digits[0]), int("".join(ch for ch in digits[1] if ch.isdigit()))
    check((major, minor) >= (9, 2), f"server_version {version} < 9.2")
    check(s.get("integer_datetimes") == "on", f"integer_datetimes={s.get('integer_datetimes')}")
    check(s.get("standard_conforming_strings") == "on", "standard_conforming_strings")
    check(s.get("client_encoding") == "UTF8", f"client_encoding={s.get('client_encoding')}")
    check(c.pid is not None and len(c.key) >= 4, "no BackendKeyData")
    c.close()


def check_type_loading():
    c = Conn(power_bi_params())
    by_oid = load_types(c)
    LOADED.update({oid: t[1] for oid, t in by_oid.items()})
    for name, oid, _recv in BUILTIN_TYPES:
        check(by_oid.get(oid, (None, None))[1] == name, f"type {name} ({oid}) not loaded: {by_oid.get(oid)}")
        check(by_oid[oid][0] == "pg_catalog" and by_oid[oid][2] == "b", f"{name}: {by_oid[oid]}")
    for name, oid, elem in BUILTIN_ARRAYS:
        check(by_oid.get(oid) == ("pg_catalog", name, "a", elem), f"array {name}: {by_oid.get(oid)}")
    check(by_oid.get(2249, (0, ""))[1] == "record", "pseudo-type record not loaded")
    # The receive functions the join went through, as PostgreSQL names them.
    oids = ",".join(str(o) for _, o, _ in BUILTIN_TYPES)
    c.command(
        "SELECT t.typname, p.proname FROM pg_type t JOIN pg_proc p ON p.oid = t.typreceive "
        f"WHERE t.oid IN ({oids}) ORDER BY t.oid"
    )
    c.sync()
    c.flush()
    (r,) = results(c.until_ready())
    ok(r, "receive functions")
    want = sorted(BUILTIN_TYPES, key=lambda t: t[1])
    check(r.rows == [[n, recv] for n, _, recv in want], r.rows)
    c.close()


def setup_table():
    """The table Power BI will read: created and filled through the simple protocol."""
    c = Conn(power_bi_params())
    c.query(f"DROP TABLE IF EXISTS {TABLE}")
    c.query(
        f"CREATE TABLE {TABLE} (ts TIMESTAMP NOT NULL, backend TEXT NOT NULL, region TEXT, "
        "ms DOUBLE PRECISION, code INT, bytes BIGINT, ok BOOLEAN)" + TABLE_OPTIONS
    )
    values = ", ".join(
        "('{}', '{}', {}, {}, {}, {}, {})".format(
            r["ts"].isoformat(" "),
            r["backend"],
            "NULL" if r["region"] is None else f"'{r['region']}'",
            "NULL" if r["ms"] is None else repr(r["ms"]),
            r["code"],
            r["bytes"],
            "true" if r["ok"] else "false",
        )
        for r in ROWS
    )
    c.query(f"INSERT INTO {TABLE} VALUES {values}")
    c.flush()
    for _ in range(3):
        msgs = c.until_ready()
        errors = [parse_fields(m.payload) for m in msgs if m.kind == "E"]
        check(not errors, errors)
    c.close()


ROWS = [
    {
        "ts": T0 + dt.timedelta(seconds=i),
        "backend": f"b{i % 3}",
        "region": None if i % 4 == 3 else ("eu" if i % 2 else "us"),
        "ms": None if i == 5 else i * 1.25,
        "code": 503 if i % 5 == 4 else 200,
        "bytes": 1_000_000_000_000 + i,
        "ok": i % 5 != 4,
    }
    for i in range(12)
]


def check_navigator():
    """The navigator's catalog queries (as QuestDB's PowerBiSqlTest and RavenDB's PowerBIConfig
    record them), one command of several statements: pipelined before one Sync, binary results."""
    c = Conn(power_bi_params())
    statements = [
        "select TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE\nfrom INFORMATION_SCHEMA.tables\n"
        "where TABLE_SCHEMA not in ('information_schema', 'pg_catalog')\norder by TABLE_SCHEMA, TABLE_NAME",
        "select COLUMN_NAME, ORDINAL_POSITION, IS_NULLABLE, case when (data_type like '%unsigned%') "
        "then DATA_TYPE || ' unsigned' else DATA_TYPE end as DATA_TYPE\nfrom INFORMATION_SCHEMA.columns\n"
        f"where TABLE_SCHEMA = 'public' and TABLE_NAME = '{TABLE}'\norder by TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
        "select i.CONSTRAINT_SCHEMA || '_' || i.CONSTRAINT_NAME as INDEX_NAME, ii.COLUMN_NAME, ii.ORDINAL_POSITION, "
        "case when i.CONSTRAINT_TYPE = 'PRIMARY KEY' then 'Y' else 'N' end as PRIMARY_KEY\n"
        "from INFORMATION_SCHEMA.table_constraints i inner join INFORMATION_SCHEMA.key_column_usage ii on "
        "i.CONSTRAINT_SCHEMA = ii.CONSTRAINT_SCHEMA and i.CONSTRAINT_NAME = ii.CONSTRAINT_NAME and "
        "i.TABLE_SCHEMA = ii.TABLE_SCHEMA and i.TABLE_NAME = ii.TABLE_NAME\n"
        f"where i.TABLE_SCHEMA = 'public' and i.TABLE_NAME = '{TABLE}'\n"
        "and i.CONSTRAINT_TYPE in ('PRIMARY KEY', 'UNIQUE')\n"
        "order by i.CONSTRAINT_SCHEMA || '_' || i.CONSTRAINT_NAME, ii.TABLE_SCHEMA, ii.TABLE_NAME, ii.ORDINAL_POSITION",
        "select\n    pkcol.COLUMN_NAME as PK_COLUMN_NAME,\n    fkcol.TABLE_SCHEMA AS FK_TABLE_SCHEMA,\n"
        "    fkcol.TABLE_NAME AS FK_TABLE_NAME,\n    fkcol.COLUMN_NAME as FK_COLUMN_NAME,\n"
        "    fkcol.ORDINAL_POSITION as ORDINAL,\n"
        f"    fkcon.CONSTRAINT_SCHEMA || '_' || fkcol.TABLE_NAME || '_' || '{TABLE}' || '_' || fkcon.CONSTRAINT_NAME as FK_NAME\n"
        "from\n    (select distinct constraint_catalog, constraint_schema, unique_constraint_schema, "
        "constraint_name, unique_constraint_name\n        from INFORMATION_SCHEMA.REFERENTIAL_CONSTRAINTS) fkcon\n"
        "        inner join INFORMATION_SCHEMA.KEY_COLUMN_USAGE fkcol\n"
        "        on fkcon.CONSTRAINT_SCHEMA = fkcol.CONSTRAINT_SCHEMA\n"
        "        and fkcon.CONSTRAINT_NAME = fkcol.CONSTRAINT_NAME\n"
        "        inner join INFORMATION_SCHEMA.KEY_COLUMN_USAGE pkcol\n"
        "        on fkcon.UNIQUE_CONSTRAINT_SCHEMA = pkcol.CONSTRAINT_SCHEMA\n"
        "        and fkcon.UNIQUE_CONSTRAINT_NAME = pkcol.CONSTRAINT_NAME\n"
        f"where pkcol.TABLE_SCHEMA = 'public' and pkcol.TABLE_NAME = '{TABLE}'\n"
        "        and pkcol.ORDINAL_POSITION = fkcol.ORDINAL_POSITION\norder by FK_NAME, fkcol.ORDINAL_POSITION",
        "select character_set_name from INFORMATION_SCHEMA.character_sets",
        "select schema_name from INFORMATION_SCHEMA.schemata order by schema_name",
    ]
    for sql in statements:
        c.command(sql)
    c.sync()
    c.flush()
    tables, columns, indexes, fks, charsets, schemata = (ok(r, "navigator") for r in results(c.until_ready()))
    for r in (tables, columns, indexes, fks, charsets, schemata):
        check_columns(r)
    check(["public", TABLE, "BASE TABLE"] in tables.rows, tables.rows)
    check(all(row[0] not in ("information_schema", "pg_catalog") for row in tables.rows), tables.rows)
    check(
        columns.rows
        == [
            ["ts", 1, "NO", "timestamp without time zone"],
            ["backend", 2, "NO", "text"],
            ["region", 3, "YES", "text"],
            ["ms", 4, "YES", "double precision"],
            ["code", 5, "YES", "integer"],
            ["bytes", 6, "YES", "bigint"],
            ["ok", 7, "YES", "boolean"],
        ],
        columns.rows,
    )
    check([col.name for col in indexes.columns] == ["index_name", "column_name", "ordinal_position", "primary_key"], "")
    check(indexes.rows == [] and indexes.tag == "SELECT 0", indexes.tag)
    check(len(fks.columns) == 6 and fks.rows == [], fks.rows)
    check(charsets.rows == [["UTF8"]], charsets.rows)
    check(["public"] in schemata.rows, schemata.rows)
    c.close()


def check_columns(r):
    """What Npgsql 4.0 needs of a RowDescription: binary as asked, every type among the loaded ones
    (never 705 unknown), and a table OID of 0 or one pg_class knows."""
    for col in r.columns:
        check(col.format == 1, f"column {col.name}: format {col.format}, binary was asked for")
        check(col.type_oid != 705, f"column {col.name} has type unknown (705)")
        if LOADED:
            check(col.type_oid in LOADED, f"column {col.name}: type OID {col.type_oid} was not loaded by Npgsql")
        check(col.table_oid == 0 or col.attnum > 0, f"column {col.name}: table OID {col.table_oid} without attnum")


def folded(where=lambda r: True):
    return [r for r in ROWS if where(r)]


def check_pooled_reuse():
    """A pooled connection given back and taken again: Npgsql 4.0 prepends DISCARD ALL (a simple
    Query) to the next command's Parse/Bind/Describe/Execute/Sync, all in one write."""
    c = Conn(power_bi_params())
    c.command(f'select count(1) as "a0" from "public"."{TABLE}" "_"')
    c.sync()
    c.flush()
    (r,) = results(c.until_ready())
    check(ok(r, "count").rows == [[len(ROWS)]], r.rows)
    c.query("DISCARD ALL")
    c.command(f'select "_"."backend" from "public"."{TABLE}" "_" where "_"."code" = 503 order by "_"."ts"')
    c.sync()
    c.flush()
    msgs = c.until_ready()
    check([m.kind for m in msgs] == ["C", "Z"], msgs)
    check(msgs[0].payload == b"DISCARD ALL\0", msgs[0].payload)
    check(msgs[1].payload == b"I", msgs[1].payload)
    (r,) = results(c.until_ready())
    ok(r, "after DISCARD ALL")
    check_columns(r)
    check(r.rows == [[x["backend"]] for x in folded(lambda x: x["code"] == 503)], r.rows)
    c.close()


def check_folded():
    """Power Query's folded SQL: derived tables aliased "_" (and "$Table", "rows"), limit 1000001,
    the zero-row schema probe, not x is null, in (...), lower(), typed literals, U&'...' strings, || on
    columns, select distinct subqueries. Pipelined, binary results, every value checked against the rows inserted."""
    c = Conn(power_bi_params())
    cols = '"_"."ts",\n    "_"."backend",\n    "_"."region",\n    "_"."ms",\n    "_"."code",\n    "_"."bytes",\n    "_"."ok"'
    base = f'select {cols}\nfrom "public"."{TABLE}" "_"'
    statements = {
        "schema probe": f'select *\nfrom \n(\n{base}\n) "_" limit 0',
        "preview": f'select "$Table"."ts" as "ts",\n    "$Table"."backend" as "backend",\n    "$Table"."ms" as "ms"\n'
        f'from "public"."{TABLE}" "$Table"\nlimit 1000',
        "import": f'select {cols}\nfrom \n(\n    {base}\n    where not "_"."region" is null and "_"."code" in (200, 201)\n) "_"\n'
        'where "_"."ts" >= timestamp \'2024-01-01 12:00:02\' and "_"."ts" < timestamp \'2024-01-01 12:00:10\'\n'
        "limit 1000001",
        "lower and ||": f'select "_"."backend" || \'/\' || "_"."region" as "key",\n    "_"."ok" as "ok"\nfrom \n(\n'
        f'    {base}\n    where lower("_"."backend") = U&\'b\\0031\'\n) "_"\nwhere not "_"."region" is null\norder by "_"."ts"\nlimit 1000001',
        "aggregate": f'select "rows"."backend" as "backend",\n    count(1) as "a0",\n    sum("rows"."ms") as "a1",\n'
        f'    max("rows"."bytes") as "a2"\nfrom \n(\n    {base}\n    where "_"."ts" >= date \'2024-01-01\'\n) "rows"\n'
        'group by "backend"\norder by "backend"\nlimit 1000001',
        "added null column": f'select "_"."backend" as "backend",\n    null as "Custom"\nfrom "public"."{TABLE}" "_"\n'
        'where "_"."code" = 503\nlimit 1000001',
        "distinct": f'select "_"."backend"\nfrom \n(\n    select distinct "_"."backend"\n    from "public"."{TABLE}" "_"\n) "_"\n'
        'order by "_"."backend"\nlimit 1001',
    }
    for sql in statements.values():
        c.command(sql)
    c.sync()
    c.flush()
    answers = dict(zip(statements, results(c.until_ready())))
    for name, r in answers.items():
        ok(r, name)
        check_columns(r)
    check(len(answers) == len(statements), f"{len(answers)} results for {len(statements)} statements")

    probe = answers["schema probe"]
    check([col.name for col in probe.columns] == ["ts", "backend", "region", "ms", "code", "bytes", "ok"], "")
    check([col.type_oid for col in probe.columns] == [1114, 25, 25, 701, 23, 20, 16], [c.type_oid for c in probe.columns])
    check(probe.rows == [] and probe.tag == "SELECT 0", probe.tag)

    preview = answers["preview"]
    check(sorted(preview.rows, key=lambda x: x[0]) == [[r["ts"], r["backend"], r["ms"]] for r in ROWS], preview.rows)

    imp = answers["import"]
    want = [
        [r["ts"], r["backend"], r["region"], r["ms"], r["code"], r["bytes"], r["ok"]]
        for r in folded(
            lambda r: r["region"] is not None
            and r["code"] in (200, 201)
            and T0 + dt.timedelta(seconds=2) <= r["ts"] < T0 + dt.timedelta(seconds=10)
        )
    ]
    check(sorted(imp.rows, key=lambda x: x[0]) == want, imp.rows)
    check(imp.tag == f"SELECT {len(want)}", imp.tag)

    lower = answers["lower and ||"]
    check(lower.rows == [[f"b1/{r['region']}", r["ok"]] for r in folded(lambda r: r["backend"] == "b1" and r["region"])], lower.rows)

    agg = answers["aggregate"]
    check([col.type_oid for col in agg.columns] == [25, 20, 701, 20], [col.type_oid for col in agg.columns])
    want = []
    for b in sorted({r["backend"] for r in ROWS}):
        rs = folded(lambda r: r["backend"] == b)
        ms = [r["ms"] for r in rs if r["ms"] is not None]
        want.append([b, len(rs), sum(ms) if ms else None, max(r["bytes"] for r in rs)])
    check(agg.rows == want, f"{agg.rows} != {want}")

    added = answers["added null column"]
    # PostgreSQL types an untyped NULL result column as text.
    check([col.type_oid for col in added.columns] == [25, 25], [col.type_oid for col in added.columns])
    check(sorted(added.rows) == sorted([r["backend"], None] for r in folded(lambda r: r["code"] == 503)), added.rows)

    check(answers["distinct"].rows == [[b] for b in sorted({r["backend"] for r in ROWS})], answers["distinct"].rows)
    c.close()


def check_error_until_sync():
    """A failing Parse in a pipeline: ErrorResponse, the following messages skipped until Sync,
    ReadyForQuery, and the next command works."""
    c = Conn(power_bi_params())
    c.command(f'select "_"."code" from "public"."{TABLE}" "_" limit 1')
    c.command('select "_"."nope" from "public"."no_such_table" "_"')
    c.command(f'select count(1) from "public"."{TABLE}" "_"')
    c.sync()
    c.flush()
    msgs = c.until_ready()
    kinds = [m.kind for m in msgs]
    check(kinds[:5] == ["1", "2", "T", "D", "C"], kinds)
    check(kinds[5] == "E" and kinds[6:] == ["Z"], f"after the error: {kinds[5:]}")
    err = parse_fields(msgs[5].payload)
    check(err.get("C") == "42P01", err)
    check(msgs[-1].payload == b"I", msgs[-1].payload)
    c.command(f'select count(1) from "public"."{TABLE}" "_"')
    c.sync()
    c.flush()
    (r,) = results(c.until_ready())
    check(ok(r, "after recovery").rows == [[len(ROWS)]], r.rows)
    # A syntax error is reported as such (42601), and recovery works the same way.
    c.command("select 1 +")
    c.command("select 1")
    c.sync()
    c.flush()
    msgs = c.until_ready()
    check([m.kind for m in msgs] == ["E", "Z"], [m.kind for m in msgs])
    check(parse_fields(msgs[0].payload).get("C") == "42601", parse_fields(msgs[0].payload))
    c.close()


def check_cancel():
    """NpgsqlCommand.Cancel: a CancelRequest with the BackendKeyData on a new socket; the running
    statement ends with 57014 and the connection stays usable."""
    c = Conn(power_bi_params())
    c.command("select count(*) from generate_series(1, 200000) a(x), generate_series(1, 200000) b(y) where x * y < 0")
    c.sync()
    c.flush()
    time.sleep(0.5)
    # Generous timeouts: the machine may be busy; without the cancel the statement runs for hours.
    s = socket.create_connection((HOST, PORT), timeout=60)
    body = struct.pack("!ii", 80877102, c.pid) + c.key
    s.sendall(struct.pack("!i", len(body) + 4) + body)
    # Npgsql waits for the server to close the cancel connection.
    check(s.recv(1) == b"", "the server answered a CancelRequest")
    s.close()
    c.sock.settimeout(60)
    msgs = c.until_ready()
    errors = [parse_fields(m.payload) for m in msgs if m.kind == "E"]
    check(errors and errors[0].get("C") == "57014", f"no 57014 after cancel: {[m.kind for m in msgs]} {errors}")
    c.command("select 1")
    c.sync()
    c.flush()
    (r,) = results(c.until_ready())
    check(ok(r, "after cancel").rows == [[1]], r.rows)
    c.close()


CHECKS = [
    ("startup (SSLRequest, parameters, BackendKeyData)", check_startup),
    ("type loading (PostgresDatabaseInfo, 3 statements, one Sync)", check_type_loading),
    ("navigator (information_schema, pipelined, binary)", check_navigator),
    ("pooled connection reuse (DISCARD ALL before Parse)", check_pooled_reuse),
    ("folded queries (binary results)", check_folded),
    ("error until Sync", check_error_until_sync),
    ("CancelRequest", check_cancel),
]


def main():
    failed = 0
    try:
        setup_table()
    except Exception:
        print(f"client {CLIENT}: FAILED to create its table")
        traceback.print_exc()
        print("test result: FAILED. 0 passed; 1 failed")
        return 1
    for name, fn in CHECKS:
        try:
            fn()
            print(f"client {CLIENT}, {name}: ok")
        except Exception:
            failed += 1
            print(f"client {CLIENT}, {name}: FAILED")
            traceback.print_exc()
    print(f"test result: {'ok' if not failed else 'FAILED'}. {len(CHECKS) - failed} passed; {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
