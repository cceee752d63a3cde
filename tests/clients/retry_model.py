"""The retry model against scikit-learn, and the HTTP endpoint against SQL.

Trains a model with train_retry_model over retry_features (a WHERE clause and options from the command
line), fetches the same rows, encodes them as docs/retry-model.md says (text: most frequent value is the
baseline, the others one column each; numbers: NULL is the training mean; standardised with the training
rows' mean and population deviation), fits scikit-learn's LogisticRegression with the same L2 (C = 1 / l2)
on the rows before the model's split time, and compares: coefficients, held-out predictions, AUC ROC and
log loss. Then scores a few rows over HTTP (POST /v1/predict/retry) and compares with predict_model in
SQL, and checks the HTTP errors. Drops the model it trained. Prints one line per check, the figures, and a
`test result:` line.

Usage: python retry_model.py HOST PORT HTTP_PORT [--where SQL] [--options 'l2=1, eval_fraction=0.25']
"""

import argparse
import io
import json
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

parser = argparse.ArgumentParser()
parser.add_argument("host")
parser.add_argument("port", type=int)
parser.add_argument("http_port", type=int)
parser.add_argument("--where", default="true")
parser.add_argument("--options", default="l2=1, eval_fraction=0.25")
args = parser.parse_args()

MODEL = "sklearn_check"
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print(f"retry model: {what}: ok")
    else:
        failed += 1
        print(f"retry model: {what}: FAILED")


conn = psycopg.connect(host=args.host, port=args.port, user="py", dbname="trafficdb", autocommit=True)
cur = conn.cursor()
cur.execute("SELECT count(*) FROM models WHERE name = %s", (MODEL,))
if cur.fetchone()[0]:
    cur.execute(f"SELECT * FROM drop_model('{MODEL}')")

query = f"SELECT * FROM retry_features WHERE {args.where}"
started = time.time()
# Table functions take constants, not bind parameters: the arguments are quoted here.
cur.execute(
    sql.SQL(
        "SELECT version, rows_train, rows_eval, auc_roc, log_loss, converged, duration_ms "
        "FROM train_retry_model({}, {}, {})"
    ).format(sql.Literal(MODEL), sql.Literal(query), sql.Literal(args.options + ", deploy=false"))
)
version, rows_train, rows_eval, auc_db, logloss_db, converged, duration_ms = cur.fetchone()
print(f"trafficdb: trained on {rows_train} rows, held out {rows_eval}, converged {converged}, {duration_ms:.0f} ms")
check(converged, "training converged")
cur.execute("SELECT split_at, options FROM models WHERE name = %s AND version = %s", (MODEL, version))
split_at, options = cur.fetchone()
options = json.loads(options)

# The same rows, in a DataFrame.
started = time.time()
with cur.copy(f"COPY ({query}) TO STDOUT (FORMAT csv, HEADER true)") as copy:
    data = b"".join(bytes(block) for block in copy)
frame = pd.read_csv(io.BytesIO(data), keep_default_na=True, na_values=[""], dtype={"status": str})
frame["ts"] = pd.to_datetime(frame["ts"], format="ISO8601")
print(f"fetched {len(frame)} rows in {time.time() - started:.1f} s")
frame["will_retry"] = frame["will_retry"].map({"t": True, "f": False, True: True, False: False})
# Booleans (written t / f) are numbers to the model; the focus column is not a feature.
for b in frame.columns:
    if b != "will_retry" and len(frame[b].dropna()) and set(frame[b].dropna().unique()) <= {"t", "f", True, False}:
        frame[b] = frame[b].map({"t": 1.0, "f": 0.0, True: 1.0, False: 0.0})

features = [c for c in frame.columns if c not in ("ts", options["label"], options["focus"])]
train = frame[frame["ts"] < pd.Timestamp(split_at)]
held = frame[frame["ts"] >= pd.Timestamp(split_at)]
check(len(train) == rows_train and len(held) == rows_eval, f"split at {split_at}: {len(train)} / {len(held)} rows")

text = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
columns, names = [], []
for c in features:
    if c in text:
        counts = train[c].value_counts(dropna=True)
        order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        levels = [v for v, _ in order[1 : options["max_categories"]]]
        for level in levels:
            columns.append(lambda f, c=c, level=level: (f[c] == level).astype(float).to_numpy())
            names.append((c, level))
    else:
        fill = train[c].mean(skipna=True)
        fill = 0.0 if np.isnan(fill) else fill
        columns.append(lambda f, c=c, fill=fill: f[c].astype(float).fillna(fill).to_numpy())
        names.append((c, None))


def design(f):
    return np.column_stack([col(f) for col in columns])


x_train, x_held = design(train), design(held)
mean = x_train.mean(axis=0)
scale = x_train.std(axis=0)
scale[scale == 0] = 1.0
y_train = train[options["label"]].to_numpy(dtype=bool)
y_held = held[options["label"]].to_numpy(dtype=bool)

started = time.time()
reference = LogisticRegression(C=1.0 / options["l2"], solver="newton-cholesky", tol=1e-10, max_iter=1000)
reference.fit((x_train - mean) / scale, y_train)
print(f"scikit-learn: fitted in {time.time() - started:.1f} s")
p_ref = reference.predict_proba((x_held - mean) / scale)[:, 1]
auc_ref, logloss_ref = roc_auc_score(y_held, p_ref), log_loss(y_held, p_ref)

cur.execute(f"SELECT feature, level, standardized_weight FROM model_weights('{MODEL}', {version})")
weights = {(f, l): w for f, l, w in cur.fetchall()}
check(set(weights) - {("(intercept)", None)} == set(names), "the same one-hot columns as scikit-learn")
ours = np.array([weights.get(n, np.nan) for n in names])
diff = np.nanmax(np.abs(ours - reference.coef_[0]))
largest = np.max(np.abs(reference.coef_[0]))
print(f"standardised coefficients: largest |difference| {diff:.2e} (largest coefficient {largest:.3f})")
check(diff < 1e-3 * max(1.0, largest), "coefficients agree with scikit-learn")
check(abs(weights[("(intercept)", None)] - reference.intercept_[0]) < 1e-3 * max(1.0, largest), "intercept agrees")

print(f"held-out AUC ROC: trafficdb {auc_db:.6f}, scikit-learn {auc_ref:.6f}")
print(f"held-out log loss: trafficdb {logloss_db:.6f}, scikit-learn {logloss_ref:.6f}")
check(abs(auc_db - auc_ref) < 1e-3, "AUC ROC agrees")
check(abs(logloss_db - logloss_ref) < 1e-3 * max(1.0, logloss_ref), "log loss agrees")

# Predictions over SQL, row by row against scikit-learn's, on a sample of held-out rows.
sample = held.sample(n=min(2000, len(held)), random_state=1)
args_sql = ", ".join(features)
cur.execute(
    f"SELECT predict_model('{MODEL}', {version}, {args_sql}) FROM ({query}) q WHERE ts >= %s ORDER BY ts",
    (split_at,),
)
p_sql = np.array([r[0] for r in cur.fetchall()])
order = held.sort_values("ts", kind="stable")
p_ref_sorted = reference.predict_proba((design(order) - mean) / scale)[:, 1]
check(len(p_sql) == len(order), "predict_model scores every held-out row")
if len(p_sql) == len(order):
    # Rows with the same ts may come in either order; compare sorted probabilities per timestamp group.
    gap = np.max(np.abs(np.sort(p_sql) - np.sort(p_ref_sorted)))
    print(f"held-out probabilities: largest |difference| {gap:.2e}")
    check(gap < 1e-3, "predictions agree with scikit-learn")

# HTTP: the same probabilities as SQL, rows by name and by position; errors.
url = f"http://{args.host}:{args.http_port}/v1/predict/retry"


def post(body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


rows = sample.head(5)


def value(v):
    if isinstance(v, float) and np.isnan(v):
        return None
    return v.item() if hasattr(v, "item") else v


by_name = [{c: value(r[c]) for c in features} for _, r in rows.iterrows()]
by_position = [[value(r[c]) for c in features] for _, r in rows.iterrows()]
status, answer = post({"model": MODEL, "version": version, "rows": by_name})
check(status == 200 and len(answer.get("probabilities", [])) == 5, "HTTP scores rows given by name")
literals = []
for row in by_name:
    parts = []
    for c in features:
        v = row[c]
        if v is None:
            parts.append("NULL")
        elif isinstance(v, str):
            parts.append("'" + v.replace("'", "''") + "'")
        else:
            parts.append(repr(float(v)))
    literals.append("SELECT predict_model('%s', %d, %s)" % (MODEL, version, ", ".join(parts)))
p_expected = []
for statement in literals:
    cur.execute(statement)
    p_expected.append(cur.fetchone()[0])
if status == 200:
    check(np.max(np.abs(np.array(answer["probabilities"]) - np.array(p_expected))) < 1e-12, "HTTP equals SQL")
status2, answer2 = post({"model": MODEL, "version": version, "rows": by_position})
check(status2 == 200 and answer2.get("probabilities") == answer.get("probabilities"), "HTTP rows by position")
status, answer = post({"model": "no_such_model", "rows": by_name})
check(status == 404 and answer.get("sqlstate") == "42704", "HTTP unknown model: 404")
status, answer = post({"model": MODEL, "version": version, "rows": [{"bogus": 1}]})
check(status == 400 and "no feature" in answer.get("error", ""), "HTTP unknown feature: 400")
status, answer = post({"model": MODEL, "version": version, "rows": [[1, 2]]})
check(status == 400 and "features" in answer.get("error", ""), "HTTP wrong row length: 400")
with urllib.request.urlopen(f"http://{args.host}:{args.http_port}/health") as r:
    check(r.status == 200, "HTTP /health")

# HTTP with no model named: the deployed `retry` model, boosted trees in the demo, against predict_retry.
cur.execute("SELECT version, features, options FROM models WHERE name = 'retry' AND deployed")
deployed = cur.fetchone()
check(deployed is not None, "the demo deploys a retry model")
if deployed is not None:
    retry_version, retry_features, retry_options = deployed
    print(f"deployed retry model: version {retry_version}, {json.loads(retry_options).get('model_type')}")
    columns = [f.strip().split(" ")[0] for f in str(retry_features).strip("{}[]").replace('"', "").split(",")]
    names = ", ".join(columns)
    cur.execute(
        f"SELECT {names}, predict_retry({names}) FROM retry_features WHERE retryable "
        "ORDER BY ts LIMIT 20"
    )
    fetched = cur.fetchall()
    tree_rows = [{c: (float(v) if isinstance(v, (int, float)) else v) for c, v in zip(columns, r[:-1])} for r in fetched]
    status, answer = post({"rows": tree_rows})
    got = answer.get("probabilities", []) if status == 200 else []
    check(
        status == 200 and answer.get("model") == "retry" and len(got) == len(fetched)
        and max(abs(a - r[-1]) for a, r in zip(got, fetched)) < 1e-12,
        f"HTTP with the deployed model ({json.loads(retry_options).get('model_type')}) equals predict_retry",
    )

cur.execute(f"SELECT * FROM drop_model('{MODEL}')")
print(f"test result: {'ok' if failed == 0 else 'FAILED'}. {passed} passed; {failed} failed")
sys.exit(1 if failed else 0)
