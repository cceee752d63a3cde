"""Boosted trees for the retry model against scikit-learn, on a later week.

Against a server over 14 generated days (`trafficdb generate --days 14`): trains
`model_type=boosted_trees` on the retryable failures of the first week (in SQL), scores the second week
with evaluate_model, and fits scikit-learn's HistGradientBoostingClassifier (the same algorithm and
defaults, early stopping off) on the same rows: text as categories, NULL as missing. Checks that:

- the AUC ROC on the later week's retryable failures is at least 0.95, and within 0.005 of
  scikit-learn's (log loss and Brier within 0.01);
- the model beats the baselines evaluate_model reports (the retryable-status rule on every attempt, the
  client's past retry share on the failures) and logistic regression on the same features;
- the probabilities are calibrated: in every calibration bin with 200 rows or more, the observed rate is
  within 0.1 of the mean prediction.

Prints the figures, the calibration table, one line per check, and a `test result:` line.

Usage: python retry_trees.py HOST PORT
"""

import io
import sys
import time

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

host, port = sys.argv[1], int(sys.argv[2])
SPLIT = "2024-01-08 00:00:00"
WEEK1 = f"SELECT * FROM retry_failures WHERE ts < TIMESTAMP '{SPLIT}'"
WEEK2 = f"SELECT * FROM retry_failures WHERE ts >= TIMESTAMP '{SPLIT}'"
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print(f"retry trees: {what}: ok")
    else:
        failed += 1
        print(f"retry trees: {what}: FAILED")


conn = psycopg.connect(host=host, port=port, user="py", dbname="trafficdb", autocommit=True)
cur = conn.cursor()
# The retryable failures, once (the view reads every attempt for the clients' histories).
started = time.time()
cur.execute("DROP TABLE IF EXISTS retry_failures")
cur.execute("CREATE TABLE retry_failures AS SELECT * FROM retry_features WHERE retryable")
print(f"retry_failures: {time.time() - started:.1f} s")


versions = {}


def train(name, options):
    started = time.time()
    cur.execute(
        sql.SQL("SELECT version, rows_train, iterations FROM train_retry_model({}, {}, {})").format(
            sql.Literal(name), sql.Literal(WEEK1), sql.Literal(options + ", eval_fraction=0, deploy=false")
        )
    )
    version, rows, iterations = cur.fetchone()
    print(f"{name}: trained on {rows} failures of week 1 ({iterations} iterations) in {time.time() - started:.1f} s")
    cur.execute(
        sql.SQL(
            "SELECT subset, scorer, rows, auc_roc, log_loss, brier FROM evaluate_model({}, {}, {})"
        ).format(sql.Literal(name), sql.Literal(version), sql.Literal(WEEK2))
    )
    versions[name] = version
    return {(subset, scorer): (n, auc, ll, brier) for subset, scorer, n, auc, ll, brier in cur.fetchall()}


trees = train("trees_check", "model_type=boosted_trees")
linear = train("linear_check", "model_type=logistic")
for (subset, scorer), (n, auc, ll, brier) in sorted(trees.items()):
    print(f"  week 2, {subset:9} {scorer:28} rows {n:7}  AUC {auc:.4f}  log loss {ll:.4f}  Brier {brier:.4f}")
n, auc, ll, brier = trees[("all", "model")]
print(f"logistic regression, same features: AUC {linear[('all', 'model')][1]:.4f}")

# The same rows in scikit-learn.
with cur.copy("COPY (SELECT * FROM retry_failures) TO STDOUT (FORMAT csv, HEADER true)") as copy:
    data = b"".join(bytes(block) for block in copy)
frame = pd.read_csv(io.BytesIO(data), keep_default_na=True, na_values=[""], dtype={"status": str})
frame["ts"] = pd.to_datetime(frame["ts"], format="ISO8601")
for b in frame.columns:
    if len(frame[b].dropna()) and set(frame[b].dropna().unique()) <= {"t", "f", True, False}:
        frame[b] = frame[b].map({"t": 1.0, "f": 0.0, True: 1.0, False: 0.0})
features = [c for c in frame.columns if c not in ("ts", "will_retry", "retryable")]
categorical = [not pd.api.types.is_numeric_dtype(frame[c]) for c in features]
x = frame[features].copy()
for c, is_text in zip(features, categorical):
    if is_text:
        codes = pd.Categorical(x[c]).codes.astype(float)
        codes[codes < 0] = np.nan
        x[c] = codes
x = x.astype(float)
week1 = (frame["ts"] < pd.Timestamp(SPLIT)).to_numpy()
y = frame["will_retry"].to_numpy(dtype=bool)
check(week1.sum() > 0 and (~week1).sum() == n, f"the same rows: {week1.sum()} / {(~week1).sum()}")
started = time.time()
reference = HistGradientBoostingClassifier(categorical_features=categorical, early_stopping=False, random_state=0)
reference.fit(x[week1], y[week1])
p = reference.predict_proba(x[~week1])[:, 1]
auc_ref, ll_ref, brier_ref = roc_auc_score(y[~week1], p), log_loss(y[~week1], p), brier_score_loss(y[~week1], p)
print(f"scikit-learn: fitted in {time.time() - started:.1f} s; AUC {auc_ref:.4f}, log loss {ll_ref:.4f}, Brier {brier_ref:.4f}")
print(f"trafficdb:    AUC {auc:.4f}, log loss {ll:.4f}, Brier {brier:.4f}")

check(auc >= 0.95, f"AUC ROC on the later week's retryable failures {auc:.4f} >= 0.95")
check(abs(auc - auc_ref) <= 0.005, f"AUC ROC within 0.005 of scikit-learn ({auc - auc_ref:+.4f})")
check(abs(ll - ll_ref) <= 0.01 and abs(brier - brier_ref) <= 0.01, "log loss and Brier within 0.01 of scikit-learn")
check(auc > linear[("all", "model")][1] + 0.03, "trees ahead of logistic regression on the same features")
baselines = {k: v for k, v in trees.items() if k[1] != "model"}
check(
    baselines and all(auc > v[1] + 0.05 for v in baselines.values() if v[1] is not None),
    "ahead of every baseline: " + ", ".join(f"{s}/{r} {v[1]:.4f}" for (s, r), v in sorted(baselines.items())),
)

cur.execute(
    sql.SQL("SELECT bin, rows, mean_predicted, observed_rate FROM calibration({}, {}, {}, 10)").format(
        sql.Literal("trees_check"), sql.Literal(versions["trees_check"]), sql.Literal(WEEK2)
    )
)
table = cur.fetchall()
print("calibration on week 2 (bin, rows, mean predicted, observed):")
worst = 0.0
for b, rows, mean_p, observed in table:
    print(f"  {b:3} {rows:7} {mean_p if mean_p is not None else float('nan'):.3f} {observed if observed is not None else float('nan'):.3f}")
    if rows >= 200:
        worst = max(worst, abs(mean_p - observed))
check(worst <= 0.1, f"calibrated: the largest gap in a bin of 200 rows or more is {worst:.3f}")

for name in ("trees_check", "linear_check"):
    cur.execute(f"SELECT * FROM drop_model('{name}')")
print(f"test result: {'ok' if failed == 0 else 'FAILED'}. {passed} passed; {failed} failed")
sys.exit(1 if failed else 0)
