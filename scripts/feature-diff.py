"""Compares the features cargo resolves for the server binary alone (`cargo run -p trafficdb-server`,
README's first command) with those of the workspace build (the test command): a crate built with
different features in the two is built twice, and with it DataFusion. Prints the differences and
exits 1 when there are any."""
import subprocess
import sys


def features(args):
    run = subprocess.run(
        ["cargo", "tree", "--locked", "--prefix", "none", "-f", "{p}|{f}", *args],
        capture_output=True, text=True,
    )
    if run.returncode != 0:
        sys.exit(f"cargo tree {' '.join(args)} failed:\n{run.stderr}")
    out = run.stdout
    found = {}
    for line in out.splitlines():
        if "|" not in line:
            continue
        package, feats = line.split("|", 1)
        package = package.replace("(*)", "").strip()
        feats = feats.replace("(*)", "").strip()
        found.setdefault(package, set()).update(f for f in feats.split(",") if f)
    return found


binary = features(["-p", "trafficdb-server", "-e", "normal,build"])
workspace = features(["--workspace", "-e", "normal,build,dev"])
differ = 0
for package in sorted(binary):
    if package in workspace and binary[package] != workspace[package]:
        differ += 1
        print(f"{package}: only in the workspace build {sorted(workspace[package] - binary[package])}, "
              f"only in the binary's {sorted(binary[package] - workspace[package])}")
if differ:
    print(f"{differ} crates are built with other features by `cargo run -p trafficdb-server` than by the "
          "workspace build: enable them in server/Cargo.toml's feature-unification block", file=sys.stderr)
    sys.exit(1)
print(f"the binary's {len(binary)} crates are built with the workspace build's features")
