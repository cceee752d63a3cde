"""Fails when a SQLSTATE is written as a five-character literal outside the one vocabulary
(`udfs/src/sqlstate.rs`): every crate names codes as `SqlState::...`. Test modules at the end of a
file and the integration tests (which compare against what clients receive) may use literals."""
import glob
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
VOCABULARY = os.path.join("udfs", "src", "sqlstate.rs")
CODE = re.compile(r'"([0-9A-Z]{5})"')

found = []
for crate in ["engine", "udfs", "schema", "server", "benches"]:
    for path in sorted(glob.glob(os.path.join(ROOT, crate, "src", "**", "*.rs"), recursive=True)):
        rel = os.path.relpath(path, ROOT)
        if rel == VOCABULARY:
            continue
        text = open(path, encoding="utf-8").read()
        tests = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod\s+\w+\s*\{", text, re.M)
        if tests:
            text = text[: tests.start()]
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("//"):
                continue
            for m in CODE.finditer(line):
                if any(c.isdigit() for c in m.group(1)):
                    found.append(f"{rel}:{number}: {line.strip()}")
if found:
    print("\n".join(found))
    sys.exit(f"{len(found)} SQLSTATE literals outside {VOCABULARY}: name them SqlState::...")
print(f"every SQLSTATE is named through {VOCABULARY}")
