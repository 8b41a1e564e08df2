#!/usr/bin/env python3
"""Prints larder's module dependency graph, read from `crate::` paths in src/.

    scripts/module-graph.py [--depth N] [SRC]

Each module (a file under src/, named by its path: settings::defs,
storage::s3) is a node; an edge A -> B means A's code names `crate::B...`
(or `super::...` resolved to B). Nodes are cut to --depth path segments
(default 2), so `storage::sftp::session` counts as `storage::sftp`. Prints the
edges between different nodes, then each cycle (strongly connected group of
nodes) with more than one member, and the counts. Tests are left out.
"""
import re
import sys
from pathlib import Path

args = sys.argv[1:]
depth = 2
if args[:1] == ["--depth"]:
    depth = int(args[1])
    args = args[2:]
src = Path(args[0] if args else "src")


def module_of(path: Path) -> list:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def cut(parts: list) -> str:
    return "::".join(parts[:depth]) or "crate"


def strip_tests(text: str) -> str:
    """The code without its tests and comments."""
    index = text.find("#[cfg(test)]\nmod tests")
    text = text if index < 0 else text[:index]
    return re.sub(r"//.*", "", text)


known = {tuple(module_of(p)) for p in src.rglob("*.rs")}
edges = set()
for path in sorted(src.rglob("*.rs")):
    here = module_of(path)
    text = strip_tests(path.read_text())
    targets = []
    for match in re.finditer(r"\bcrate((?:::\w+)+)", text):
        targets.append(match.group(1).strip(":").split("::"))
    for match in re.finditer(r"\b((?:super::)+)((?:\w+::)*\w+)", text):
        ups = match.group(1).count("super::")
        is_mod_file = path.name == "mod.rs"
        base = here[: len(here) - ups + (1 if is_mod_file else 0)] if ups else here
        targets.append(base + match.group(2).split("::"))
    for target in targets:
        # The longest prefix that is a module.
        while target and tuple(target) not in known:
            target = target[:-1]
        if not target:
            continue
        a, b = cut(here), cut(target)
        if a != b and not b.startswith(a + "::") and not a.startswith(b + "::"):
            edges.add((a, b))

nodes = sorted({n for e in edges for n in e})
graph = {n: sorted(b for a, b in edges if a == n) for n in nodes}

# Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in graph[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        scc = []
        while True:
            w = stack.pop()
            on.discard(w)
            scc.append(w)
            if w == v:
                break
        sccs.append(sorted(scc))


sys.setrecursionlimit(10000)
for n in nodes:
    if n not in index:
        visit(n)

for a, b in sorted(edges):
    print(f"{a} -> {b}")
cycles = [s for s in sccs if len(s) > 1]
print()
for scc in sorted(cycles):
    print("cycle: " + " <-> ".join(scc))
print(f"{len(nodes)} modules, {len(edges)} edges, {len(cycles)} cycles")
