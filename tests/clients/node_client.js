// node-postgres (`pg`) against a running trafficdb server.
//
// Usage: node node_client.js HOST PORT   (with `pg` and `pg-copy-streams` on NODE_PATH)
// Each case connects, writes with $n parameters, reads the values back as the driver types them
// (Date, number, string, boolean, null), runs queries concurrently through a pool, checks SQLSTATEs
// and streams COPY FROM STDIN. Prints one line per case and a `test result:` line; exits non-zero if
// any case failed. Run it in a time zone other than UTC: the driver sends a Date with the local
// offset, which a TIMESTAMP (without time zone) ignores and a TIMESTAMPTZ honours, as in PostgreSQL.

'use strict';
const assert = require('node:assert/strict');
const { pipeline } = require('node:stream/promises');
const { Readable } = require('node:stream');
const pg = require('pg');
const { from: copyFrom } = require('pg-copy-streams');

const [host, port] = process.argv.slice(2);
const config = { host, port: Number(port), user: 'node', database: 'trafficdb' };
// 2024-01-01 12:00:00 local time, plus `s` seconds.
const at = (s) => new Date(2024, 0, 1, 12, 0, s);

async function withClient(fn) {
  const c = new pg.Client(config);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function parameters() {
  await withClient(async (c) => {
    await c.query(
      'CREATE TABLE node_t (ts TIMESTAMP NOT NULL, host TEXT NOT NULL, ms DOUBLE PRECISION, code INT, ' +
        "bytes BIGINT, ok BOOLEAN, at TIMESTAMPTZ) WITH (time_column = 'ts')",
    );
    for (let i = 0; i < 6; i++) {
      const r = await c.query('INSERT INTO node_t VALUES ($1, $2, $3, $4, $5, $6, $7)', [
        at(i),
        `h${i % 2}`,
        i * 0.5,
        200 + i,
        5000000000 + i,
        i % 2 === 0,
        at(i),
      ]);
      assert.equal(r.rowCount, 1, 'insert row count');
    }
    await c.query('INSERT INTO node_t (ts, host) VALUES ($1, $2)', [at(30), 'nulls']);

    const r = await c.query('SELECT ts, host, ms, code, bytes, ok, at FROM node_t WHERE host = $1 AND code > $2 ORDER BY ts', [
      'h1',
      201,
    ]);
    assert.deepEqual(
      r.fields.map((f) => f.dataTypeID),
      [1114, 25, 701, 23, 20, 16, 1184],
      'column type OIDs',
    );
    assert.equal(r.rows.length, 2, 'rows of h1 above code 201');
    for (const [row, i] of [[r.rows[0], 3], [r.rows[1], 5]]) {
      assert.ok(row.ts instanceof Date, 'ts is a Date');
      assert.equal(row.ts.getTime(), at(i).getTime(), `ts of row ${i}`);
      assert.equal(row.at.getTime(), at(i).getTime(), `timestamptz of row ${i}`);
      assert.equal(row.host, 'h1');
      assert.equal(row.ms, i * 0.5);
      assert.equal(row.code, 200 + i);
      assert.equal(row.bytes, String(5000000000 + i), 'bigint comes back as a string');
      assert.equal(row.ok, false);
    }
    // The wall-clock time written is the one stored (12:00 whatever the offset sent); a TIMESTAMPTZ
    // keeps the instant.
    const stored = await c.query(
      'SELECT CAST(extract(hour FROM ts) AS INT) AS hour, CAST(extract(epoch FROM ts) AS BIGINT) AS ts, ' +
        'CAST(extract(epoch FROM at) AS BIGINT) AS at FROM node_t WHERE code = 200',
    );
    assert.deepEqual(stored.rows, [
      { hour: 12, ts: String(Date.UTC(2024, 0, 1, 12) / 1000), at: String(at(0).getTime() / 1000) },
    ]);

    const nulls = await c.query('SELECT ms, code, bytes, ok, at FROM node_t WHERE host = $1', ['nulls']);
    assert.deepEqual(nulls.rows, [{ ms: null, code: null, bytes: null, ok: null, at: null }]);

    // A named prepared statement, executed twice.
    for (const code of [202, 204]) {
      const q = await c.query({ name: 'by-code', text: 'SELECT host, ms FROM node_t WHERE code = $1', values: [code] });
      assert.deepEqual(q.rows, [{ host: 'h0', ms: (code - 200) * 0.5 }], `named statement, code ${code}`);
    }
    // Array rows and the simple protocol (no parameters: one Query message).
    const simple = await c.query({ text: 'SELECT count(*), max(code) FROM node_t', rowMode: 'array' });
    assert.deepEqual(simple.rows, [['7', 205]]);
  });
}

async function pool() {
  const p = new pg.Pool({ ...config, max: 4 });
  try {
    const codes = [200, 201, 202, 203, 204, 205, 200, 201, 202, 203, 204, 205];
    const results = await Promise.all(
      codes.map((code) =>
        p.query('SELECT count(*) AS n, min(ms) AS ms FROM node_t WHERE code = $1 AND ts >= $2', [code, at(0)]),
      ),
    );
    results.forEach((r, k) => assert.deepEqual(r.rows, [{ n: '1', ms: (codes[k] - 200) * 0.5 }], `query ${k}`));
    assert.ok(p.totalCount <= 4, `at most 4 connections, got ${p.totalCount}`);
  } finally {
    await p.end();
  }
}

async function errors() {
  await withClient(async (c) => {
    await assert.rejects(c.query('SELECT * FROM no_such_table'), (e) => e.code === '42P01');
    await assert.rejects(c.query('SELECT no_such_column FROM node_t WHERE code = $1', [1]), (e) => e.code === '42703');
    await assert.rejects(c.query('SELEC 1'), (e) => e.code === '42601');
    const r = await c.query('SELECT count(*) AS n FROM node_t');
    assert.equal(r.rows[0].n, '7', 'the connection still works');
  });
}

async function copy() {
  await withClient(async (c) => {
    const lines = [];
    for (let i = 0; i < 100; i++) {
      lines.push(`2024-01-02 00:00:${String(i % 60).padStart(2, '0')}.${i}\tcopied\t${i}\t${i % 2 ? '\\N' : 307}\n`);
    }
    await pipeline(Readable.from(lines), c.query(copyFrom('COPY node_t (ts, host, ms, code) FROM STDIN')));
    const r = await c.query('SELECT count(*) AS n, count(code) AS with_code, sum(ms) AS ms FROM node_t WHERE host = $1', [
      'copied',
    ]);
    assert.deepEqual(r.rows, [{ n: '100', with_code: '50', ms: 4950 }]);
  });
}

const cases = [
  ['node-postgres (CREATE TABLE, $n parameters, Date / number / string / boolean / null back, named statement)', parameters],
  ['node-postgres (Pool: 12 concurrent queries on 4 connections)', pool],
  ['node-postgres (error codes 42P01, 42703, 42601)', errors],
  ['node-postgres + pg-copy-streams (COPY FROM STDIN)', copy],
];

(async () => {
  let failed = 0;
  for (const [name, fn] of cases) {
    try {
      await fn();
      console.log(`client ${name}: ok`);
    } catch (e) {
      failed++;
      console.log(`client ${name}: FAILED`);
      console.log(e && e.stack ? e.stack : e);
    }
  }
  console.log(`test result: ${failed ? 'FAILED' : 'ok'}. ${cases.length - failed} passed; ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
