#!/usr/bin/env python3
"""The stack bound the runtime trusts (attn_rt_desc.stack, the plan's stack) against the frames
the backend really laid out: every attention block of the given specs, compiled for x86-64 to
assembly, must have its tile (and group) function's frame plus its largest piece's within the
bound in its header.

usage: check_stack.py ATTNC SPEC.attn...
"""
import os
import re
import subprocess
import sys
import tempfile


def frames(asm):
    """The bytes each function subtracts from %rsp (its frame)."""
    out, cur = {}, None
    for line in asm.splitlines():
        m = re.match(r"^([A-Za-z_][\w.]*):", line)
        if m:
            cur = m.group(1)
            out.setdefault(cur, 0)
            continue
        m = re.search(r"subq\s+\$(\d+), %rsp", line)
        if m and cur:
            out[cur] = max(out[cur], int(m.group(1)))
    return out


def main():
    attnc, specs = sys.argv[1], sys.argv[2:]
    checked, bad = 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            base = os.path.join(tmp, os.path.basename(spec)[:-5])
            subprocess.run([attnc, "build", spec, "-o", base + ".s", "--emit", "asm", "--header", base + ".h",
                            "--target", "x86_64-linux-gnu", "--cpu", "x86-64-v4"], check=True)
            fr = frames(open(base + ".s").read())
            header = open(base + ".h").read()
            for m in re.finditer(r"static const attn_rt_desc attnc_(\w+)_desc[^{]*\{\s*(.*?)\s*\};", header, re.S):
                fields = [x.strip() for x in m.group(2).split(",") if x.strip()]
                bound, fns = int(fields[14]), [f for f in (fields[9], fields[10]) if f != "NULL"]  # stack: field 14
                worst = 0
                for fn in fns:
                    pieces = [v for k, v in fr.items() if k.startswith(fn + ".")]
                    worst = max(worst, fr.get(fn, 0) + max(pieces, default=0))
                checked += 1
                if not fns or fr.get(fns[0]) is None or worst > bound:
                    bad += 1
                    print(f"FAIL {spec}: {m.group(1)}: frames {worst} bytes, bound {bound}")
                else:
                    print(f"ok {m.group(1)}: frames {worst} <= bound {bound}")
    print(f"{checked} blocks checked, {bad} failed")
    return 1 if bad or not checked else 0


if __name__ == "__main__":
    sys.exit(main())
