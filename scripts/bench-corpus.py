#!/usr/bin/env python3
"""Writes a deterministic corpus shaped like a Go module cache (GOMODCACHE).

    bench-corpus.py DIR [--size-mb 600] [--files 15000] [--seed 1]

DIR/pkg.mod gets, in the proportions of a real module cache:
  - extracted modules (github.com/<org>/<repo>@vX.Y.Z/...): many small .go
    files of Go-like text, a go.mod, a LICENSE, some testdata;
  - a few large generated files per hundred modules (*.pb.go-like text);
  - cache/download/<module>/@v/: the module's .zip (already compressed, so it
    does not compress again), .mod, .info and .ziphash files;
  - module trees read-only, as Go leaves them: files 0444, directories 0555.
The same arguments always give the same bytes.
"""

import argparse
import os
import random
import zlib

WORDS = (
    "func return if else for range switch case default package import type struct "
    "interface map chan go defer select var const nil err error string int int64 "
    "uint8 byte bool true false context ctx request response client server config "
    "Handler Marshal Unmarshal NewReader Write Read Close fmt Errorf strings Builder "
    "len append make copy panic recover json yaml proto buf field value key index"
).split()


def line_pool(rng, count):
    """Go-looking lines to sample from: cheap to generate, compressible like code."""
    pool = []
    for _ in range(count):
        indent = "\t" * rng.randint(0, 3)
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9)))
        pool.append(f"{indent}{words}({rng.choice(WORDS)}, {rng.randint(0, 9999)})\n")
    return pool


def text(rng, pool, size):
    out = []
    total = 0
    while total < size:
        line = rng.choice(pool)
        out.append(line)
        total += len(line)
    return "".join(out).encode()[:size]


def write(path, data, mode):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--size-mb", type=float, default=600)
    parser.add_argument("--files", type=int, default=15000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    pool = line_pool(rng, 5000)
    root = os.path.join(args.dir, "pkg.mod")
    target = int(args.size_mb * 1e6)
    # A module has ~30 files in the tree plus 4 in cache/download.
    modules = max(1, args.files // 34)
    per_module = target // modules
    written = 0
    files = 0
    read_only_dirs = []
    for m in range(modules):
        org = f"org{m % 97}"
        name = f"mod{m}"
        version = f"v1.{m % 13}.{m % 7}"
        mod_dir = os.path.join(root, "github.com", org, f"{name}@{version}")
        budget = per_module
        # Cache/download: the zip is ~40% of a module's bytes and incompressible.
        source = text(rng, pool, max(2000, int(budget * 0.4)))
        zipped = zlib.compress(source, 6)
        dl = os.path.join(root, "cache", "download", "github.com", org, name, "@v")
        write(os.path.join(dl, f"{version}.zip"), zipped, 0o644)
        write(os.path.join(dl, f"{version}.mod"), f"module github.com/{org}/{name}\n\ngo 1.21\n".encode(), 0o644)
        write(os.path.join(dl, f"{version}.info"), f'{{"Version":"{version}"}}\n'.encode(), 0o644)
        write(os.path.join(dl, f"{version}.ziphash"), f"h1:{rng.getrandbits(128):032x}=\n".encode(), 0o644)
        written += len(zipped)
        files += 4
        budget -= len(zipped)
        # The extracted tree.
        write(os.path.join(mod_dir, "go.mod"), f"module github.com/{org}/{name}\n".encode(), 0o444)
        write(os.path.join(mod_dir, "LICENSE"), text(rng, pool, 1100), 0o444)
        files += 2
        if m % 50 == 0:
            big = text(rng, pool, min(budget // 2, 6_000_000))
            write(os.path.join(mod_dir, "api", "generated.pb.go"), big, 0o444)
            written += len(big)
            budget -= len(big)
            files += 1
        sources = 27
        for i in range(sources):
            size = max(200, int(budget / sources * rng.uniform(0.3, 1.7)))
            package = os.path.join(mod_dir, f"pkg{i % 6}")
            name_ext = "_test.go" if i % 5 == 0 else ".go"
            write(os.path.join(package, f"file{i}{name_ext}"), text(rng, pool, size), 0o444)
            written += size
            files += 1
        if m % 10 == 0:
            write(os.path.join(mod_dir, "testdata", "blob.bin"), rng.randbytes(4096), 0o444)
            files += 1
        read_only_dirs.append(mod_dir)
    # Read-only directories last, deepest first, as Go does after extracting.
    for mod_dir in read_only_dirs:
        for dirpath, dirnames, _ in sorted(os.walk(mod_dir), key=lambda d: -d[0].count("/")):
            os.chmod(dirpath, 0o555)
    print(f"{root}: {files} files, {written / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
