// pgjdbc (the PostgreSQL JDBC driver) against a running trafficdb server.
//
// Usage: java -cp postgresql.jar:DIR JdbcClient HOST PORT
// Each case connects, writes through PreparedStatements, reads every column type back, reads the
// catalog through DatabaseMetaData as JDBC tools do, and checks SQLSTATEs. Prints one line per case
// and a `test result:` line; exits non-zero if any case failed. Run it in a time zone other than
// UTC: PostgreSQL keeps the wall-clock time of a TIMESTAMP (without time zone) whatever offset the
// driver sends with it, and so must the server.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.sql.Types;
import java.time.LocalDateTime;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public class JdbcClient {
    static String url;
    static final LocalDateTime T0 = LocalDateTime.of(2024, 1, 1, 12, 0, 0);

    interface Case {
        void run() throws Exception;
    }

    static void check(boolean cond, String what) {
        if (!cond) {
            throw new AssertionError(what);
        }
    }

    static void eq(Object expected, Object actual, String what) {
        if (expected == null ? actual != null : !expected.equals(actual)) {
            throw new AssertionError(what + ": expected <" + expected + ">, got <" + actual + ">");
        }
    }

    static Connection connect(String... options) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", "jdbc");
        for (int i = 0; i + 1 < options.length; i += 2) {
            p.setProperty(options[i], options[i + 1]);
        }
        return DriverManager.getConnection(url, p);
    }

    static Timestamp ts(int seconds) {
        return Timestamp.valueOf(T0.plusSeconds(seconds));
    }

    /** CREATE TABLE, single and batched PreparedStatement inserts, every type read back. */
    static void preparedStatements() throws Exception {
        try (Connection c = connect()) {
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TABLE jdbc_t (ts TIMESTAMP NOT NULL, backend TEXT NOT NULL, ms DOUBLE PRECISION, "
                        + "code INT, bytes BIGINT, ok BOOLEAN) WITH (time_column = 'ts')");
            }
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO jdbc_t VALUES (?, ?, ?, ?, ?, ?)")) {
                for (int i = 0; i < 10; i++) {
                    ins.setTimestamp(1, ts(i));
                    ins.setString(2, "b" + (i % 3));
                    ins.setDouble(3, i * 1.5);
                    ins.setInt(4, 200 + i % 2);
                    ins.setLong(5, 5_000_000_000L + i);
                    ins.setBoolean(6, i % 2 == 0);
                    ins.addBatch();
                }
                int[] counts = ins.executeBatch();
                eq(10, counts.length, "batch results");
                for (int n : counts) {
                    check(n == 1 || n == Statement.SUCCESS_NO_INFO, "batch row count " + n);
                }
                ins.setTimestamp(1, ts(60));
                ins.setString(2, "nulls");
                ins.setNull(3, Types.DOUBLE);
                ins.setNull(4, Types.INTEGER);
                ins.setNull(5, Types.BIGINT);
                ins.setNull(6, Types.BOOLEAN);
                eq(1, ins.executeUpdate(), "single insert count");
            }
            try (PreparedStatement q = c.prepareStatement(
                    "SELECT ts, backend, ms, code, bytes, ok FROM jdbc_t WHERE code = ? AND backend <> ? ORDER BY ts")) {
                q.setInt(1, 201);
                q.setString(2, "b0");
                try (ResultSet rs = q.executeQuery()) {
                    ResultSetMetaData md = rs.getMetaData();
                    eq(Types.TIMESTAMP, md.getColumnType(1), "column 1 type");
                    eq(Types.VARCHAR, md.getColumnType(2), "column 2 type");
                    eq(Types.DOUBLE, md.getColumnType(3), "column 3 type");
                    eq(Types.INTEGER, md.getColumnType(4), "column 4 type");
                    eq(Types.BIGINT, md.getColumnType(5), "column 5 type");
                    eq(Types.BIT, md.getColumnType(6), "column 6 type");
                    List<Integer> seconds = new ArrayList<>();
                    while (rs.next()) {
                        int i = (int) (rs.getTimestamp(1).getTime() - ts(0).getTime()) / 1000;
                        seconds.add(i);
                        eq(ts(i), rs.getTimestamp("ts"), "ts");
                        eq("b" + (i % 3), rs.getString(2), "backend");
                        eq(i * 1.5, rs.getDouble(3), "ms");
                        eq(201, rs.getInt(4), "code");
                        eq(5_000_000_000L + i, rs.getLong(5), "bytes");
                        eq(false, rs.getBoolean(6), "ok");
                    }
                    eq(List.of(1, 5, 7), seconds, "rows with code 201 not on b0");
                }
            }
            try (PreparedStatement q = c.prepareStatement("SELECT ms, code, bytes, ok, ts FROM jdbc_t WHERE backend = ?")) {
                q.setString(1, "nulls");
                try (ResultSet rs = q.executeQuery()) {
                    check(rs.next(), "the row of NULLs");
                    eq(0.0, rs.getDouble(1), "NULL double");
                    check(rs.wasNull(), "ms was NULL");
                    eq(null, rs.getObject(2), "NULL int");
                    eq(0L, rs.getLong(3), "NULL bigint");
                    check(rs.wasNull(), "bytes was NULL");
                    eq(null, rs.getObject(4), "NULL boolean");
                    // The wall-clock time written is the one read, in text too (PostgreSQL omits
                    // zero fractional digits; the server writes six).
                    String text = rs.getString(5);
                    check(text.matches("2024-01-01 12:01:00(\\.0+)?"), "ts as text: " + text);
                    check(!rs.next(), "one row");
                }
            }
            // Parameters of every type in a WHERE clause.
            try (PreparedStatement q = c.prepareStatement(
                    "SELECT count(*) FROM jdbc_t WHERE ts >= ? AND ts < ? AND ms > ? AND bytes > ? AND ok = ?")) {
                q.setTimestamp(1, ts(2));
                q.setTimestamp(2, ts(9));
                q.setDouble(3, 3.0);
                q.setLong(4, 5_000_000_003L);
                q.setBoolean(5, true);
                try (ResultSet rs = q.executeQuery()) {
                    check(rs.next(), "a count");
                    eq(3L, rs.getLong(1), "rows 4, 6 and 8");
                }
            }
        }
    }

    /**
     * With prepareThreshold=1 the driver prepares named statements on the server from the first
     * execution and asks for binary results (binaryTransfer is on by default).
     */
    static void namedStatements() throws Exception {
        try (Connection c = connect("prepareThreshold", "1", "binaryTransfer", "true")) {
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO jdbc_t (ts, backend, ms, code, bytes, ok) VALUES (?, ?, ?, ?, ?, ?)")) {
                for (int i = 0; i < 4; i++) {
                    ins.setTimestamp(1, ts(120 + i));
                    ins.setString(2, "named");
                    ins.setDouble(3, 0.25 * i);
                    ins.setInt(4, 300 + i);
                    ins.setLong(5, -i);
                    ins.setBoolean(6, true);
                    eq(1, ins.executeUpdate(), "named insert count");
                }
            }
            try (PreparedStatement q = c.prepareStatement(
                    "SELECT ts, backend, ms, code, bytes, ok FROM jdbc_t WHERE backend = ? AND code = ?")) {
                for (int round = 0; round < 5; round++) {
                    int i = round % 4;
                    q.setString(1, "named");
                    q.setInt(2, 300 + i);
                    try (ResultSet rs = q.executeQuery()) {
                        check(rs.next(), "round " + round + ": a row");
                        eq(ts(120 + i), rs.getTimestamp(1), "round " + round + ": ts");
                        eq("named", rs.getString(2), "round " + round + ": backend");
                        eq(0.25 * i, rs.getDouble(3), "round " + round + ": ms");
                        eq(300 + i, rs.getInt(4), "round " + round + ": code");
                        eq((long) -i, rs.getLong(5), "round " + round + ": bytes");
                        eq(true, rs.getBoolean(6), "round " + round + ": ok");
                        check(!rs.next(), "round " + round + ": one row");
                    }
                }
            }
        }
    }

    /** DatabaseMetaData as JDBC tools (DBeaver, IntelliJ, Spark's JDBC source) read the schema. */
    static void metadata() throws Exception {
        try (Connection c = connect()) {
            try (Statement s = c.createStatement()) {
                s.execute("CREATE VIEW jdbc_v AS SELECT backend, count(*) AS n FROM jdbc_t GROUP BY backend");
            }
            DatabaseMetaData md = c.getMetaData();
            check(md.getDatabaseProductName().equals("PostgreSQL"), md.getDatabaseProductName());
            check(md.getDatabaseMajorVersion() >= 12, "server version " + md.getDatabaseProductVersion());

            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, null, "jdbc%", null)) {
                while (rs.next()) {
                    tables.add(rs.getString("TABLE_NAME") + ":" + rs.getString("TABLE_TYPE") + ":"
                            + rs.getString("TABLE_SCHEM"));
                }
            }
            eq(List.of("jdbc_t:TABLE:public", "jdbc_v:VIEW:public"), tables, "getTables");
            tables.clear();
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"VIEW"})) {
                while (rs.next()) {
                    tables.add(rs.getString("TABLE_NAME"));
                }
            }
            check(tables.contains("jdbc_v") && !tables.contains("jdbc_t"), "views only: " + tables);

            List<String> cols = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "public", "jdbc_t", null)) {
                while (rs.next()) {
                    cols.add(rs.getInt("ORDINAL_POSITION") + " " + rs.getString("COLUMN_NAME") + " "
                            + rs.getInt("DATA_TYPE") + " " + rs.getString("TYPE_NAME") + " "
                            + rs.getInt("NULLABLE") + " " + rs.getString("IS_NULLABLE"));
                }
            }
            int nn = DatabaseMetaData.columnNoNulls;
            int yes = DatabaseMetaData.columnNullable;
            eq(List.of(
                    "1 ts " + Types.TIMESTAMP + " timestamp " + nn + " NO",
                    "2 backend " + Types.VARCHAR + " text " + nn + " NO",
                    "3 ms " + Types.DOUBLE + " float8 " + yes + " YES",
                    "4 code " + Types.INTEGER + " int4 " + yes + " YES",
                    "5 bytes " + Types.BIGINT + " int8 " + yes + " YES",
                    "6 ok " + Types.BIT + " bool " + yes + " YES"), cols, "getColumns(jdbc_t)");
            cols.clear();
            try (ResultSet rs = md.getColumns(null, null, "jdbc_v", "n")) {
                while (rs.next()) {
                    cols.add(rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME"));
                }
            }
            eq(List.of("n int8"), cols, "getColumns(jdbc_v, n)");

            List<String> schemas = new ArrayList<>();
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) {
                    schemas.add(rs.getString("TABLE_SCHEM"));
                }
            }
            check(schemas.contains("public") && schemas.contains("pg_catalog"), "getSchemas: " + schemas);

            try (ResultSet rs = md.getPrimaryKeys(null, "public", "jdbc_t")) {
                check(!rs.next(), "no primary key");
            }
        }
    }

    /** Errors carry PostgreSQL's SQLSTATEs, and the connection goes on after them. */
    static void errors() throws Exception {
        try (Connection c = connect(); Statement s = c.createStatement()) {
            try {
                s.executeQuery("SELECT * FROM no_such_table");
                check(false, "no error for a missing table");
            } catch (SQLException e) {
                eq("42P01", e.getSQLState(), "missing table: " + e.getMessage());
            }
            try (PreparedStatement q = c.prepareStatement("SELECT no_such_column FROM jdbc_t WHERE code = ?")) {
                q.setInt(1, 1);
                q.executeQuery();
                check(false, "no error for a missing column");
            } catch (SQLException e) {
                eq("42703", e.getSQLState(), "missing column: " + e.getMessage());
            }
            try (ResultSet rs = s.executeQuery("SELECT count(*) FROM jdbc_t")) {
                check(rs.next() && rs.getLong(1) == 15, "the connection still works");
            }
        }
    }

    /** Autocommit off: the driver wraps statements in BEGIN ... COMMIT. */
    static void transactions() throws Exception {
        try (Connection c = connect()) {
            c.setAutoCommit(false);
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO jdbc_t (ts, backend, code) VALUES (?, ?, ?)")) {
                ins.setTimestamp(1, ts(600));
                ins.setString(2, "tx");
                ins.setInt(3, 1);
                eq(1, ins.executeUpdate(), "insert in a transaction");
            }
            c.commit();
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT code FROM jdbc_t WHERE backend = 'tx'")) {
                check(rs.next() && rs.getInt(1) == 1, "the committed row");
            }
            c.commit();
            c.setAutoCommit(true);
        }
        try (Connection c = connect(); Statement s = c.createStatement();
                ResultSet rs = s.executeQuery("SELECT count(*) FROM jdbc_t WHERE backend = 'tx'")) {
            check(rs.next() && rs.getLong(1) == 1, "the committed row from another connection");
        }
    }

    /** executeUpdate's counts come from the command tags: UPDATE n, DELETE n, with parameters and subqueries. */
    static void updateCounts() throws Exception {
        try (Connection c = connect()) {
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TABLE jdbc_dml (id BIGINT, v TEXT)");
                eq(4, s.executeUpdate("INSERT INTO jdbc_dml VALUES (1, 'x'), (2, 'y'), (3, 'z'), (4, 'w')"), "insert count");
                s.execute("CREATE TABLE jdbc_keys (k BIGINT)");
                eq(2, s.executeUpdate("INSERT INTO jdbc_keys VALUES (2), (3)"), "insert keys");
            }
            try (PreparedStatement up = c.prepareStatement("UPDATE jdbc_dml SET v = upper(v) WHERE id > ?")) {
                up.setLong(1, 2);
                eq(2, up.executeUpdate(), "update count");
            }
            try (PreparedStatement del = c.prepareStatement(
                    "DELETE FROM jdbc_dml WHERE id IN (SELECT k FROM jdbc_keys) AND v <> ?")) {
                del.setString(1, "y");
                eq(1, del.executeUpdate(), "delete count");
            }
            try (Statement s = c.createStatement()) {
                eq(0, s.executeUpdate("DELETE FROM jdbc_dml WHERE id IN (SELECT k FROM jdbc_keys WHERE k > 100)"),
                        "delete nothing");
                try (ResultSet rs = s.executeQuery("SELECT id, v FROM jdbc_dml ORDER BY id")) {
                    StringBuilder all = new StringBuilder();
                    while (rs.next()) {
                        all.append(rs.getLong(1)).append(rs.getString(2)).append(' ');
                    }
                    eq("1x 2y 4W ", all.toString(), "rows left");
                }
                s.execute("TRUNCATE TABLE jdbc_dml");
                eq(0, s.getUpdateCount(), "truncate update count");
            }
        }
    }

    public static void main(String[] args) {
        url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/trafficdb";
        Object[][] cases = {
            {"pgjdbc (CREATE TABLE, PreparedStatement and batch inserts, every type read back)",
                (Case) JdbcClient::preparedStatements},
            {"pgjdbc (prepareThreshold=1: named statements, binary results)", (Case) JdbcClient::namedStatements},
            {"pgjdbc (DatabaseMetaData: getTables, getColumns, getSchemas, getPrimaryKeys)",
                (Case) JdbcClient::metadata},
            {"pgjdbc (SQLSTATEs 42P01, 42703)", (Case) JdbcClient::errors},
            {"pgjdbc (autocommit off, commit)", (Case) JdbcClient::transactions},
            {"pgjdbc (executeUpdate counts of UPDATE and DELETE with subqueries)", (Case) JdbcClient::updateCounts},
        };
        int failed = 0;
        for (Object[] c : cases) {
            try {
                ((Case) c[1]).run();
                System.out.println("client " + c[0] + ": ok");
            } catch (Throwable e) {
                failed++;
                System.out.println("client " + c[0] + ": FAILED");
                e.printStackTrace(System.out);
            }
        }
        System.out.println("test result: " + (failed == 0 ? "ok" : "FAILED") + ". " + (cases.length - failed)
                + " passed; " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
