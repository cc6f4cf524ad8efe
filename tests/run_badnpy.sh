#!/usr/bin/env bash
# run_badnpy.sh ATTNC WORKDIR — `attnc run` on hostile .npy files and bad -D options.
#
# Each case must exit with status 1, print a message naming the problem on standard error,
# write no output file, and never crash (no signal, no sanitizer report). The files are
# generated here with python3 (struct only; numpy for the well-formed ones when present).
set -u
if [ $# -ne 2 ]; then
    echo "usage: $0 ATTNC WORKDIR" >&2
    exit 2
fi
attnc=$1
dir=$2
rm -rf "$dir"
mkdir -p "$dir"
py=/usr/bin/python3
[ -x "$py" ] || py=python3

cat >"$dir/spec.attn" <<'EOF'
attention t { input i32 len[batch]; heads = 2; head_dim = 4; mask = k < len[b] || k <= q; }
EOF
cat >"$dir/param.attn" <<'EOF'
param w = 4;
attention t { heads = 2; head_dim = 4; mask = q - k < w; }
EOF

"$py" - "$dir" <<'EOF'
import struct, sys, os
d = sys.argv[1]

def header(descr, shape, fortran=False, version=1, pad_to=64, extra=""):
    sh = "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"
    h = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, %s}" % (
        descr, "True" if fortran else "False", sh, extra)
    pre = 10 if version == 1 else 12
    total = -(-(pre + len(h) + 1) // pad_to) * pad_to
    h = h + " " * (total - pre - len(h) - 1) + "\n"
    magic = b"\x93NUMPY" + bytes([version, 0])
    size = struct.pack("<H", len(h)) if version == 1 else struct.pack("<I", len(h))
    return magic + size + h.encode("latin1")

def write(name, data):
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def f32(n, fmt="<f"):
    return b"".join(struct.pack(fmt, (i % 7) * 0.125) for i in range(n))

B, H, L, D = 1, 2, 3, 4
n = B * H * L * D
write("q.npy", header("<f4", (B, H, L, D)) + f32(n))
write("k.npy", header("<f4", (B, H, L, D)) + f32(n))
write("v.npy", header("<f4", (B, H, L, D)) + f32(n))
write("len.npy", header("<i4", (B,)) + struct.pack("<i", 2))
good = header("<f4", (B, H, L, D)) + f32(n)
# truncated: in the data, in the header, in the magic; empty
write("trunc_data.npy", good[:-5])
write("trunc_header.npy", good[:30])
write("trunc_magic.npy", good[:4])
write("empty.npy", b"")
# dtypes: float64, big-endian float32, int64, bool, a structured dtype, a unicode string
write("f8.npy", header("<f8", (B, H, L, D)) + b"\0" * (8 * n))
write("be_f4.npy", header(">f4", (B, H, L, D)) + f32(n, ">f"))
write("i8.npy", header("<i8", (B, H, L, D)) + b"\0" * (8 * n))
write("bool.npy", header("|b1", (B, H, L, D)) + b"\0" * n)
h = b"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1, 2, 3, 4), }"
h += b" " * (118 - len(h)) + b"\n"
write("structured.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + f32(n))
# Fortran order
write("fortran.npy", header("<f4", (B, H, L, D), fortran=True) + f32(n))
# a huge header: version 2 with a 4 GiB length, and a real 1 MiB one
write("huge_hlen.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{" + b" " * 100)
big = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3, 4), }" + " " * (1 << 20) + "\n"
write("huge_header.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", len(big)) + big.encode() + f32(n))
# headers that lie: more elements than the data, a 2^62-element shape, a shape whose byte
# size overflows, a negative dim, too many dims, a rank that is wrong for q
write("lie_shape.npy", header("<f4", (B, H, L + 100, D)) + f32(n))
write("lie_2p62.npy", header("<f4", (1, 1, 1 << 62, 1)) + f32(n))
write("lie_overflow.npy", header("<f4", (1 << 40, 1 << 40, 1 << 40, 4)) + f32(n))
write("neg_dim.npy", header("<f4", (1, 2, -3, 4)) + f32(n))
write("rank9.npy", header("<f4", (1,) * 9) + f32(1))
write("rank3.npy", header("<f4", (H, L, D)) + f32(H * L * D))
write("scalar.npy", header("<f4", ()) + f32(1))
# extra bytes after the data (accepted, as numpy.load does), a bad magic, an unknown version, a header without a dict
write("trailing.npy", good + b"junk")
write("bad_magic.npy", b"\x93NUMPZ" + good[6:])
write("version9.npy", b"\x93NUMPY\x09\x00" + good[8:])
h = b"not a dict at all" + b" " * 100 + b"\n"
write("no_dict.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + f32(n))
# an int32 input given as float32, and the wrong size for len[batch]
write("len_f4.npy", header("<f4", (B,)) + f32(1))
write("len_size.npy", header("<i4", (B + 1,)) + struct.pack("<ii", 2, 2))
EOF

pass=0
fail=0
# run_case NAME EXPECTED_SUBSTRING ARGS... — attnc run must exit 1 with the substring on stderr
run_case() {
    local name=$1 want=$2
    shift 2
    rm -f "$dir/o.npy"
    local err status
    err=$("$attnc" run "$@" --out "o=$dir/o.npy" --threads 1 2>&1 >/dev/null)
    status=$?
    local why=""
    if [ "$status" -ne 1 ]; then
        why="exit status $status, expected 1"
    elif ! grep -qiF -- "$want" <<<"$err"; then
        why="no '$want' in the message"
    elif grep -qE "Sanitizer|runtime error|Segmentation|Aborted" <<<"$err"; then
        why="a sanitizer report or crash"
    elif [ -e "$dir/o.npy" ]; then
        why="an output file was written"
    fi
    if [ -z "$why" ]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: $name: $why"
        printf '%s\n' "$err" | head -n 5 | sed -e 's/^/    /'
    fi
}

s=$dir/spec.attn
ins=(--in "k=$dir/k.npy" --in "v=$dir/v.npy" --in "len=$dir/len.npy")
# the good files work, also with bytes after the data
for f in q trailing; do
    if "$attnc" run "$s" --in "q=$dir/$f.npy" "${ins[@]}" --out "o=$dir/o.npy" --threads 1 >/dev/null; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: the well-formed call with $f.npy failed"
    fi
done
for f in trunc_data trunc_header trunc_magic empty f8 be_f4 i8 bool structured fortran huge_hlen \
         huge_header lie_shape lie_2p62 lie_overflow neg_dim rank9 rank3 scalar bad_magic \
         version9 no_dict; do
    case $f in
        f8) want="'<f8'" ;;
        be_f4) want="big-endian" ;;
        fortran) want="Fortran" ;;
        *) want="$f.npy" ;;
    esac
    run_case "$f" "$want" "$s" --in "q=$dir/$f.npy" "${ins[@]}"
done
run_case len_f4 "len" "$s" --in "q=$dir/q.npy" --in "k=$dir/k.npy" --in "v=$dir/v.npy" \
    --in "len=$dir/len_f4.npy"
run_case len_size "len" "$s" --in "q=$dir/q.npy" --in "k=$dir/k.npy" --in "v=$dir/v.npy" \
    --in "len=$dir/len_size.npy"
run_case missing_file "nope.npy" "$s" --in "q=$dir/nope.npy" "${ins[@]}"
run_case directory "$dir" "$s" --in "q=$dir" "${ins[@]}"
# -D on the command line of `run`: unknown name, bad value, bad syntax
p=$dir/param.attn
pins=(--in "q=$dir/q.npy" --in "k=$dir/k.npy" --in "v=$dir/v.npy")
run_case unknown_define "unknown define 'ww'" "$p" -D ww=3 "${pins[@]}"
run_case bad_define_value "<defines>: error:" "$p" -D w=abc "${pins[@]}"
run_case define_unknown_check "unknown define" "$p" -D nope=1 "${pins[@]}"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
