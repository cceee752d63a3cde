"""Fails on a circle of module imports inside a crate: module A names an item of module B (a path
`crate::b::...`, `super::...`, or a `use crate::{...}` group) while B, directly or through others,
names an item of A. Re-exports (`pub use`), comments and the `#[cfg(test)]` module at the end of a
file are not imports. Each file is a module (a `mod.rs` is its folder's module). Usage:
python3 scripts/module-circles.py [crate dir ...]   (default: every workspace member)"""
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
MEMBERS = ["engine", "udfs", "schema", "server", "benches", "tests"]


def module_files(crate):
    """Maps module paths (tuples) to files, following `mod x;` from each crate root."""
    src = os.path.join(ROOT, crate, "src")
    roots = [f for f in ("lib.rs", "main.rs") if os.path.exists(os.path.join(src, f))]
    found = {}
    for root in roots:
        # A binary's modules live beside the library's, under a name of their own.
        prefix = () if root == "lib.rs" else ("<bin>",)
        walk(os.path.join(src, root), prefix, src, found, is_dir_owner=True)
    return found


def walk(path, module, directory, found, is_dir_owner):
    found[module] = path
    text = strip(open(path, encoding="utf-8").read())
    children_dir = directory if is_dir_owner else os.path.join(directory, module[-1])
    for name in re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", text, re.M):
        own = os.path.join(children_dir, name + ".rs")
        folder = os.path.join(children_dir, name, "mod.rs")
        if os.path.exists(own):
            walk(own, module + (name,), children_dir, found, is_dir_owner=False)
        elif os.path.exists(folder):
            walk(folder, module + (name,), os.path.join(children_dir, name), found, is_dir_owner=True)


def strip(text):
    """The code of a file without comments, string contents, re-exports and the trailing test module."""
    m = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod\s+\w+\s*\{", text, re.M)
    if m:
        text = text[: m.start()]
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    text = re.sub(r"pub\s*\([^)]*\)", "pub", text)
    text = re.sub(r"^\s*pub(?:\([^)]*\))?\s+use\s[^;]*;", "", text, flags=re.M)
    return text


def paths_in(text):
    """Every `crate::...` / `super::...` / `self::...` path, with `use` groups expanded."""
    out = []
    # A `use` of a child module without `self::` (`use table::Table;`) is relative to this module.
    text = re.sub(r"\buse\s+(?!crate\b|super\b|self\b|std\b|core\b|alloc\b)([a-z_][a-z0-9_]*)::", r"use self::\1::", text)
    for m in re.finditer(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)(::\{)?", text):
        head = [m.group(1)] + [p for p in m.group(2).split("::") if p]
        if m.group(3):
            depth, i = 1, m.end()
            while i < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            for item in split_group(text[m.end(): i - 1]):
                out.append(head + [p for p in re.split(r"::", item.split(" as ")[0].strip()) if p])
        else:
            out.append(head)
    return out


def split_group(body):
    items, depth, cur = [], 0, ""
    for c in body:
        if c == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(c, 0)
        cur += c
    items.append(cur)
    return [re.sub(r"::\{.*", "", i, flags=re.S).strip() for i in items if i.strip()]


def resolve(path, here, modules):
    """The module a path names (the longest known module prefix), from module `here`."""
    if path[0] == "crate":
        base = ("<bin>",) if here[:1] == ("<bin>",) and (("<bin>",) + tuple(path[1:2])) in modules else ()
        rest = path[1:]
    else:
        base = here
        rest = path[1:]
        if path[0] == "super":
            base = here[:-1]
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
    target = base
    for part in rest:
        if target + (part,) in modules:
            target = target + (part,)
        else:
            break
    return target


def circles(crate):
    modules = module_files(crate)
    edges = {m: set() for m in modules}
    for m, path in modules.items():
        for p in paths_in(strip(open(path, encoding="utf-8").read())):
            t = resolve(p, m, modules)
            if t != m and t in modules and t not in ((), ("<bin>",)):
                edges[m].add(t)
    # Tarjan's strongly connected components.
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in modules:
        if v not in index:
            visit(v)
    return out, edges


def name(m):
    return "::".join(m) or "crate"


def main():
    crates = sys.argv[1:] or MEMBERS
    bad = 0
    for crate in crates:
        comps, edges = circles(crate)
        for comp in comps:
            bad += 1
            members = set(comp)
            print(f"{crate}: a circle of imports between {', '.join(sorted(name(m) for m in comp))}:")
            for m in sorted(comp):
                for t in sorted(edges[m] & members):
                    print(f"    {name(m)} -> {name(t)}")
    if bad:
        sys.exit(f"{bad} circles of module imports")
    print(f"no circles of module imports in {', '.join(crates)}")


main()
