#!/usr/bin/env python3
"""Fails on a module import cycle inside the dataplane crate.

A cycle: module `a` refers to `b` (a `use`, a `crate::b::..`, `super::..` or
`child::..` path) and `b`, directly or through others, refers back to `a`.
Nodes are the crate's top-level modules (`core`, `router`, `rtmp`, ...):
everything under `rtmp/` is `rtmp`. A file split into a directory (router.rs
into router/mod.rs and router/egress.rs, ...) keeps its parts referring to
each other, which is no cycle between modules; `--depth 2` makes each
second-level module (`rtmp::hub`, `shard::rtmp`, ...) a node of its own, to
see those too.

Code under `#[cfg(test)]` is left out (tests may use any fixture);
`--with-tests` counts it. Modules behind a feature (`reencode`) are read as
if it were on, as CI builds them. The binary's main.rs is a crate of its
own (it only uses the library) and is not read. Paths are read from the
text, comments and strings left out: `crate::`, `super::`, `self::` and a
child module's name start one; a module brought in by a `use` counts there.

Prints the cycles (each reference between two modules of a cycle is on one
printed), each with where its references are; exits 1 if there is one.
Usage: python3 tests/module_cycles.py [--depth N] [--with-tests] [--src DIR] [--graph]
"""

import argparse
import os
import re
import sys
from collections import defaultdict, deque

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


RAW = re.compile(r'b?r(#*)"')


def strip_code(text):
    """`text` with comments, strings and char literals blanked (newlines
    kept, so offsets keep their line numbers)."""
    out = list(text)
    i, n = 0, len(text)

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif c in "br" and (m := RAW.match(text, i)) and not _ident_before(text, i):
            close = '"' + m.group(1)
            j = text.find(close, m.end())
            j = n if j < 0 else j + len(close)
            blank(i, j)
            i = j
        elif c == '"' or (c == "b" and text.startswith('b"', i) and not _ident_before(text, i)):
            j = i + (2 if c == "b" else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(i, j + 1)
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if i + 1 < n and text[i + 1] == "\\":
                j = text.find("'", i + 2)
                j = n if j < 0 else j
                blank(i, j + 1)
                i = j + 1
            elif i + 2 < n and text[i + 2] == "'":
                blank(i, i + 3)
                i += 3
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def _ident_before(text, i):
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")


def block_end(code, open_at):
    """Offset just past the `}` that closes the `{` at `open_at`."""
    depth = 0
    for j in range(open_at, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(code)


ITEM = re.compile(
    r"\s*(?:pub(?:\([^)]*\))?\s+)?"
    r"(?:fn|mod|use|impl|struct|enum|union|const|static|type|trait|extern|unsafe|async|macro_rules)\b"
)


def item_end(code, start):
    """Offset just past the item starting at `start`: its `;` or its block.
    Not an item (a field, a statement, a match arm): up to its `,` or `;`,
    or the `}` that closes what holds it."""
    item = ITEM.match(code, start) is not None
    depth = 0
    for j in range(start, len(code)):
        ch = code[j]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == ";" and depth == 0:
            return j + 1
        elif ch == "{" and depth == 0 and item:
            return block_end(code, j)
        elif ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                return j
            depth -= 1
        elif ch == "," and depth == 0 and not item:
            return j + 1
    return len(code)


CFG_TEST = re.compile(r"#\[cfg\(\s*test\s*\)\]")
ATTR = re.compile(r"\s*#\[")


def drop_test_items(code):
    """`code` without the items under `#[cfg(test)]`, and the names of the
    `mod x;` files so left out."""
    test_mods = set()
    out = list(code)
    for m in CFG_TEST.finditer(code):
        start = m.end()
        # Further attributes of the same item.
        while a := ATTR.match(code, start):
            start = item_end_attr(code, a.end() - 1)
        end = item_end(code, start)
        decl = re.match(r"\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", code[start:end])
        if decl:
            test_mods.add(decl.group(1))
        for k in range(m.start(), end):
            if out[k] != "\n":
                out[k] = " "
    return "".join(out), test_mods


def item_end_attr(code, bracket):
    depth = 0
    for j in range(bracket, len(code)):
        if code[j] == "[":
            depth += 1
        elif code[j] == "]":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(code)


def module_files(src):
    """{module path tuple: file} for the library's files (`lib.rs` is ())."""
    files = {}
    for dirpath, _, names in os.walk(src):
        for name in names:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
            if rel == ["main"]:
                continue
            if rel == ["lib"]:
                mod = ()
            elif rel[-1] == "mod":
                mod = tuple(rel[:-1])
            else:
                mod = tuple(rel)
            files[mod] = path
    return files


INLINE_MOD = re.compile(r"\bmod\s+(\w+)\s*\{")
FILE_MOD = re.compile(r"\bmod\s+(\w+)\s*;")
USE = re.compile(r"(?<![\w:])use\s+")
# A path of two segments or more (a lone `crate` is `pub(crate)`, a lone
# `self` a receiver); not `pub(in crate::x)`.
PATH = re.compile(r"(?<![\w:$])(?<!\bin\s)(\w+(?:\s*::\s*\w+)+)")


def split_use_tree(tree):
    """`a::{b as c, d::{self, E}, f::*}` → [[a, b], [a, d], [a, d, E], [a, f]]."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, s):
        if "{" not in s:
            segs = [x for x in s.split("::") if x]
            while segs and segs[-1] in ("*", "self"):
                segs = segs[:-1]
            out.append(prefix + segs)
            return
        brace = s.index("{")
        head = [x for x in s[:brace].split("::") if x]
        inner = s[brace + 1 : s.rindex("}")]
        depth, part, parts = 0, "", []
        for ch in inner:
            if ch == "," and depth == 0:
                parts.append(part)
                part = ""
                continue
            depth += (ch == "{") - (ch == "}")
            part += ch
        parts.append(part)
        for p in parts:
            if p:
                walk(prefix + head, p)

    walk([], tree)
    return out


class Crate:
    def __init__(self, src, with_tests):
        self.src = src
        self.files = module_files(src)
        self.modules = set()
        self.children = defaultdict(set)  # module → child names
        self.code = {}  # module path of the file → (code, inline mod spans)
        skipped = set()
        for mod, path in sorted(self.files.items(), key=lambda kv: len(kv[0])):
            if any(mod[:k] in skipped for k in range(1, len(mod) + 1)):
                continue
            with open(path, encoding="utf-8") as f:
                code = strip_code(f.read())
            if with_tests:
                test_mods = set()
            else:
                code, test_mods = drop_test_items(code)
            skipped.update(mod + (t,) for t in test_mods)
            spans = []  # (start, end, inline module path)
            for m in INLINE_MOD.finditer(code):
                start = m.end() - 1
                end = block_end(code, start)
                spans.append((start, end, m.group(1)))
            self.code[mod] = (code, spans)
            self.modules.add(mod)
            for m in FILE_MOD.finditer(code):
                self.children[mod].add(m.group(1))
            for start, end, name in spans:
                inner = self.inline_path(mod, spans, start) + (name,)
                self.modules.add(inner)
                self.children[inner[:-1]].add(name)

    @staticmethod
    def inline_path(mod, spans, at):
        """The module at offset `at` of the file of `mod` (inline modules nest)."""
        path = mod
        for start, end, name in sorted(spans):
            if start < at < end:
                path = path + (name,)
        return path

    def resolve(self, here, segs):
        """The deepest module `segs` (a path written in module `here`) names,
        or None for another crate's or a local name."""
        if not segs:
            return None
        if segs[0] == "crate":
            base, rest = (), segs[1:]
        elif segs[0] in ("super", "self"):
            base, rest = here, segs
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    base = base[:-1]
                rest = rest[1:]
        elif segs[0] in self.children[here]:
            base, rest = here, segs
        else:
            return None
        for s in rest:
            if base + (s,) in self.modules:
                base = base + (s,)
            else:
                break
        return base

    def references(self):
        """(from module, to module, file, line, path text) for every reference."""
        for mod, (code, spans) in self.code.items():
            path = os.path.relpath(self.files[mod], ROOT)
            line_at = _line_index(code)
            uses = []
            for m in USE.finditer(code):
                end = item_end(code, m.end())
                here = self.inline_path(mod, spans, m.start())
                tree = code[m.end() : end].rstrip(";")
                for segs in split_use_tree(tree):
                    to = self.resolve(here, segs)
                    if to is not None:
                        yield here, to, path, line_at(m.start()), "use " + "::".join(segs)
                uses.append((m.start(), end))
            for m in PATH.finditer(code):
                if any(a <= m.start() < b for a, b in uses):
                    continue
                segs = [x for x in re.split(r"\s*::\s*", m.group(1)) if x]
                here = self.inline_path(mod, spans, m.start())
                to = self.resolve(here, segs)
                if to is not None:
                    yield here, to, path, line_at(m.start()), "::".join(segs)


def _line_index(code):
    starts = [0] + [i + 1 for i, c in enumerate(code) if c == "\n"]

    def line_at(off):
        lo, hi = 0, len(starts)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if starts[mid] <= off:
                lo = mid
            else:
                hi = mid
        return lo + 1

    return line_at


def node(mod, depth):
    return "::".join(mod[:depth]) if mod else "(crate root)"


def sccs(graph):
    """Strongly connected components (Tarjan), each a sorted list."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def shortest_path(graph, start, goal, allowed):
    prev = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        if v == goal:
            path = []
            while v is not None:
                path.append(v)
                v = prev[v]
            return path[::-1]
        for w in sorted(graph[v]):
            if w in allowed and w not in prev:
                prev[w] = v
                queue.append(w)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=os.path.join(ROOT, "dataplane", "src"))
    ap.add_argument("--depth", type=int, default=1, help="module path length of a node (1: top-level)")
    ap.add_argument("--with-tests", action="store_true", help="count #[cfg(test)] code too")
    ap.add_argument("--graph", action="store_true", help="print every edge between nodes")
    args = ap.parse_args()

    crate = Crate(args.src, args.with_tests)
    graph = defaultdict(set)
    where = defaultdict(list)
    for frm, to, path, line, text in crate.references():
        a, b = node(frm, args.depth), node(to, args.depth)
        graph[a]
        graph[b]
        at = f"{path}:{line}"
        if a != b and not any(w.startswith(at + " ") for w in where[(a, b)]):
            graph[a].add(b)
            where[(a, b)].append(f"{at} {text}")

    if args.graph:
        for a in sorted(graph):
            for b in sorted(graph[a]):
                print(f"{a} -> {b}  ({len(where[(a, b)])} references)")

    cycles = set()
    found = [c for c in sccs(graph) if len(c) > 1]
    for comp in found:
        members = set(comp)
        for a in comp:
            for b in sorted(graph[a] & members):
                back = shortest_path(graph, b, a, members)
                cyc = [a] + back[:-1]
                k = cyc.index(min(cyc))
                cycles.add(tuple(cyc[k:] + cyc[:k]))

    what = "top-level modules" if args.depth == 1 else f"modules to depth {args.depth}"
    tests = "with" if args.with_tests else "without"
    if not cycles:
        print(f"no module cycles in {os.path.relpath(args.src, ROOT)} ({what}, {tests} #[cfg(test)] code)")
        return 0
    print(
        f"{len(cycles)} module cycle(s) among {sum(len(c) for c in found)} modules in "
        f"{os.path.relpath(args.src, ROOT)} ({what}, {tests} #[cfg(test)] code):"
    )
    for cyc in sorted(cycles, key=lambda c: (len(c), c)):
        print("\n  " + " -> ".join(cyc + (cyc[0],)))
        for a, b in zip(cyc, cyc[1:] + (cyc[0],)):
            refs = where[(a, b)]
            more = f" (+{len(refs) - 3} more)" if len(refs) > 3 else ""
            print(f"    {a} -> {b}: " + "; ".join(refs[:3]) + more)
    return 1


if __name__ == "__main__":
    sys.exit(main())
