#!/usr/bin/env python3
"""Writes a Go module world that builds with no network: a module proxy
(GOPROXY's file layout) holding generated modules, and an app that imports
every one of them.

    bench-go-corpus.py DIR [--modules 60] [--files 12] [--funcs 40]

DIR/proxy is the proxy (<module>/@v/{list,<v>.info,<v>.mod,<v>.zip}),
DIR/app the app (go.mod, main.go; go.sum is made by `go mod download`).
Each module has --files source files of --funcs small functions, so the
module cache holds real code for Go to extract and compile. The same
arguments always give the same bytes.
"""

import argparse
import os
import zipfile

parser = argparse.ArgumentParser()
parser.add_argument("dir")
parser.add_argument("--modules", type=int, default=60)
parser.add_argument("--files", type=int, default=12)
parser.add_argument("--funcs", type=int, default=40)
args = parser.parse_args()

proxy = os.path.join(args.dir, "proxy")
app = os.path.join(args.dir, "app")
os.makedirs(app, exist_ok=True)
requires, imports, calls = [], [], []
for m in range(args.modules):
    path = f"example.com/gen/m{m:03d}"
    version = "v1.0.0"
    v = os.path.join(proxy, path, "@v")
    os.makedirs(v, exist_ok=True)
    go_mod = f"module {path}\n\ngo 1.19\n"
    with open(os.path.join(v, "list"), "w") as f:
        f.write(version + "\n")
    with open(os.path.join(v, f"{version}.info"), "w") as f:
        f.write('{"Version":"%s","Time":"2024-01-01T00:00:00Z"}' % version)
    with open(os.path.join(v, f"{version}.mod"), "w") as f:
        f.write(go_mod)
    prefix = f"{path}@{version}/"
    with zipfile.ZipFile(os.path.join(v, f"{version}.zip"), "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(prefix + "go.mod", go_mod)
        for n in range(args.files):
            body = [f"package m{m:03d}\n\nimport \"strings\"\n\n"]
            for k in range(args.funcs):
                body.append(
                    f"// F{n}_{k} joins its words, as code does.\n"
                    f"func F{n}_{k}(a, b string) string {{\n"
                    f"\tif len(a) > {k} {{\n\t\treturn strings.ToUpper(a) + b\n\t}}\n"
                    f"\treturn strings.Repeat(b, {k % 3 + 1}) + \"{m}-{n}-{k}\"\n}}\n\n"
                )
            z.writestr(prefix + f"f{n:02d}.go", "".join(body))
    requires.append(f"\t{path} {version}\n")
    imports.append(f"\t\"{path}\"\n")
    calls.append(f"\tfmt.Println(m{m:03d}.F0_0(\"a\", \"b\"))\n")
with open(os.path.join(app, "go.mod"), "w") as f:
    f.write("module example.com/app\n\ngo 1.19\n\nrequire (\n" + "".join(requires) + ")\n")
with open(os.path.join(app, "main.go"), "w") as f:
    f.write("package main\n\nimport (\n\t\"fmt\"\n\n" + "".join(imports) + ")\n\nfunc main() {\n" + "".join(calls) + "}\n")
