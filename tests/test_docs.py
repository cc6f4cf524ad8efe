#!/usr/bin/env python3
"""test_docs.py SOURCE_DIR BUILD_DIR — the documentation cannot rot:
- the shipped docs (README.md, docs/*, the headers, the Python package) never cite the
  project's internal contract ("SPEC") — they must say what users need themselves;
- every mask picture of docs/prelude.md is what `attnc mask` draws;
- every option the command line takes is documented in docs/cli.md and docs/attnc.1, and
  every option those document exists;
- `attnc help TOPIC` agrees with the docs (tensor shapes, MLA tensors, the prelude, the
  environment variables);
- docs/tutorial.md: its `sh` blocks run, in order, against an install of the build tree."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

SRC = os.path.abspath(sys.argv[1])
BUILD = os.path.abspath(sys.argv[2])
ATTNC = os.path.join(BUILD, "attnc")
failures = 0


def fail(msg):
    global failures
    failures += 1
    print("FAIL:", msg, file=sys.stderr)


def read(rel):
    with open(os.path.join(SRC, rel), encoding="utf-8") as f:
        return f.read()


def attnc(*args, env=None):
    return subprocess.run([ATTNC, *args], capture_output=True, text=True, timeout=120, env=env)


def man_text():
    return read("docs/attnc.1").replace("\\-", "-")


# --- no "SPEC" in what ships -----------------------------------------------------------------
shipped = ["README.md", "docs/attnc.1"]
shipped += ["docs/" + f for f in sorted(os.listdir(os.path.join(SRC, "docs"))) if f.endswith(".md")]
shipped += ["include/attn/" + f for f in sorted(os.listdir(os.path.join(SRC, "include/attn")))]
shipped += ["python/attnc/" + f for f in sorted(os.listdir(os.path.join(SRC, "python/attnc"))) if f.endswith(".py")]
spec_word = re.compile(r"(?<![A-Za-z0-9_])SPEC(?![A-Za-z0-9_])|SPEC\.md")
for rel in shipped:
    for n, line in enumerate(read(rel).splitlines(), 1):
        if spec_word.search(line):
            fail(f"{rel}:{n}: cites the internal contract (SPEC): {line.strip()}")

# --- the prelude's pictures --------------------------------------------------------------------
prelude = read("docs/prelude.md")
pics = re.findall(r"<!-- attnc mask: mask = (.*?); (--q-len \d+ --kv-len \d+(?: --q-offset -?\d+)?) -->\n"
                  r"```text\n(.*?)```", prelude, re.S)
if len(pics) < 7:
    fail(f"docs/prelude.md: {len(pics)} mask pictures, expected one per prelude name at least")
tmp = tempfile.mkdtemp(prefix="attnc_docs_")
env = dict(os.environ, ATTNC_CACHE_DIR=os.environ.get("ATTNC_CACHE_DIR", os.path.join(tmp, "cache")))
for expr, args, picture in pics:
    spec = os.path.join(tmp, "m.attn")
    with open(spec, "w") as f:
        f.write("attention m { heads = 1; head_dim = 4; mask = %s; }\n" % expr)
    p = attnc("mask", spec, *args.split(), env=env)
    drawn = "\n".join(p.stdout.splitlines()[1:]) + "\n"
    if p.returncode != 0 or drawn != picture:
        fail(f"docs/prelude.md: the picture of `{expr}` ({args}) is not what attnc mask draws:\n{p.stdout}{p.stderr}")
for name in ("causal", "window(w)", "sliding(w)", "dilated(r)", "prefix(n)", "strided(l)", "fixed(l, c)"):
    if f"## `{name}`" not in prelude:
        fail(f"docs/prelude.md: no section for {name}")

# --- options: the CLI's and the docs' are the same set ------------------------------------------
flag = re.compile(r"(?<![\w-])(--[a-z][a-z-]*|-D|-O|-o|-fno-prune|-h)(?![\w-])")
cli_flags = set()
helps = [attnc("--help").stdout] + [attnc("help", c).stdout for c in ("check", "dump", "build", "run", "bench", "mask")]
for h in helps:
    for line in h.splitlines():
        m = re.match(r"\s+(-\S+)", line)
        if m and m.group(1).startswith("-"):
            cli_flags.add(m.group(1))
cli_flags |= {"--version", "-h"}
if len(cli_flags) < 20:
    fail(f"attnc help lists only {sorted(cli_flags)}")
not_ours = ("pkg-config", "cmake", "cc ", "pip ", "man ")
for rel, text in (("docs/cli.md", read("docs/cli.md")), ("docs/attnc.1", man_text())):
    doc_flags = set()
    for line in text.splitlines():
        if any(w in line for w in not_ours):
            continue
        doc_flags |= set(flag.findall(re.sub(r"-O[0-3]\b", "-O", line)))
    doc_flags.discard("--name")  # "--name=value", the syntax of options with a value
    for f in sorted(cli_flags - doc_flags):
        fail(f"{rel}: option {f} of the command line is not documented")
    for f in sorted(doc_flags - cli_flags):
        fail(f"{rel}: documents option {f}, which the command line does not take")

# --- help topics agree with the docs ------------------------------------------------------------
topics = re.findall(r"^  (\w+)\s{2,}", attnc("help").stdout.split("help topics", 1)[-1], re.M)
if set(topics) != {"tensors", "positions", "prelude", "mla", "environment"}:
    fail(f"attnc help lists topics {topics}")
for t in topics:
    p = attnc("help", t)
    if p.returncode != 0 or not p.stdout:
        fail(f"attnc help {t}: exit {p.returncode}")
    if t not in read("docs/cli.md") or t not in man_text():
        fail(f"help topic {t} is not documented in docs/cli.md and docs/attnc.1")


def shape_rows(out):
    return re.findall(r"^(\w+)\s+(\[[^\]]*\])", out, re.M)


def check_table(topic, rel):
    doc = read(rel)
    rows = shape_rows(attnc("help", topic).stdout)
    if len(rows) < 5:
        fail(f"attnc help {topic}: no shapes")
    for name, shape in rows:
        if not re.search(r"^\| `%s`[^|]*\| `%s`" % (re.escape(name), re.escape(shape)), doc, re.M):
            fail(f"attnc help {topic}: {name} {shape} is not in {rel}'s table")


check_table("tensors", "docs/language.md")
check_table("mla", "docs/mla.md")
norm = lambda s: re.sub(r"\s+", " ", s.split("#")[0]).strip()  # noqa: E731
prelude_norm = {norm(line) for line in re.findall(r"```\n((?:let|def) .*?)\n```", prelude)}
for line in attnc("help", "prelude").stdout.splitlines():
    if line.startswith(("let ", "def ")) and norm(line) not in prelude_norm:
        fail(f"attnc help prelude: `{norm(line)}` is not defined in docs/prelude.md")
for var in re.findall(r"^(ATTNC_\w+)", attnc("help", "environment").stdout, re.M):
    for rel, text in (("docs/attnc.1", man_text()), ("docs/packaging.md", read("docs/packaging.md"))):
        if var not in text:
            fail(f"attnc help environment: {var} is not documented in {rel}")
# --- every statement of an attention block has a row in docs/language.md ----------------------
sema = read("frontend/sema.c")
m = re.search(r"stmt_names\[ST_COUNT\] = \{(.*?)\};", sema, re.S)
stmts = re.findall(r'"(\w+)"', m.group(1)) if m else []
if len(stmts) < 10:
    fail("frontend/sema.c: cannot find the statement names")
lang = read("docs/language.md")
table = lang.split("## Statements of an `attention` block", 1)[-1].split("\n## ", 1)[0]
for st in stmts + ["kv_cache", "input", "param", "let", "mla"]:
    if not re.search(r"^\| `%s\b" % st, table, re.M) and f"/ `{st} " not in table:
        fail(f"docs/language.md: statement '{st}' has no row in the statements table")
# defaults that differ for MLA blocks are stated there too
for phrase in ("nope_dim+rope_dim", "unless `mla`"):
    if phrase not in table:
        fail(f"docs/language.md: the statements table lacks '{phrase}'")

positions = attnc("help", "positions").stdout
for phrase in ("kv_len - q_len", "-inf", "kv_len = 0", "q_len = 0", "batch = 0"):
    if phrase not in positions or phrase not in read("docs/language.md"):
        fail(f"positions: '{phrase}' missing from attnc help positions or docs/language.md")

# --- the tutorial runs ---------------------------------------------------------------------------
tutorial = read("docs/tutorial.md")
blocks = re.findall(r"```sh\n(.*?)```", tutorial, re.S)
if len(blocks) < 5:
    fail(f"docs/tutorial.md: {len(blocks)} sh blocks")
if "kern.backward" not in tutorial or "attnc.torch" not in tutorial:
    fail("docs/tutorial.md: no training step (kern.backward, attnc.torch)")
prefix = os.path.join(tmp, "prefix")
inst = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix], capture_output=True, text=True)
if inst.returncode != 0:
    fail("cmake --install: " + inst.stderr)
else:
    libdir = os.path.dirname(next(os.path.join(d, f) for d, _, fs in os.walk(prefix) for f in fs if f == "libattnc.so"))
    bindir = os.path.join(tmp, "bin")  # python3 is Debian's (python3-numpy), whatever PATH had
    os.makedirs(bindir)
    os.symlink("/usr/bin/python3", os.path.join(bindir, "python3"))
    work = os.path.join(tmp, "work")
    os.makedirs(work)
    tenv = {k: v for k, v in env.items() if k not in ("ATTNC_LIB", "PYTHONPATH", "LD_LIBRARY_PATH")}
    tenv.update(PATH=os.pathsep.join([os.path.join(prefix, "bin"), bindir, "/usr/bin", "/bin"]),
                PKG_CONFIG_PATH=os.path.join(libdir, "pkgconfig"),
                PYTHONPATH=os.path.join(prefix, "lib", "python3", "dist-packages"))
    script = "set -euo pipefail\n" + "".join("echo '+ tutorial step %d'\n%s" % (i + 1, b) for i, b in enumerate(blocks))
    p = subprocess.run(["bash", "-c", script], cwd=work, env=tenv, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        fail(f"docs/tutorial.md: the commands failed (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    else:
        for want in ("attnc run matches the definition", "decoded 16 tokens", "o[0] = ", "GFLOP/s"):
            if want not in p.stdout:
                fail(f"docs/tutorial.md: output lacks {want!r}:\n{p.stdout[-3000:]}")

if failures:
    print(f"test_docs: {failures} failure(s); files in {tmp}", file=sys.stderr)
    sys.exit(1)
shutil.rmtree(tmp, ignore_errors=True)
print("test_docs: ok")
