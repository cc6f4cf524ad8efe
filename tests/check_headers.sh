#!/usr/bin/env bash
# check_headers.sh INCLUDE_DIR HEADER... — the AOT headers compile, unused, as C99 and as C++17
# with -Wall -Wextra -Werror -pedantic, each on its own and all of them in one translation unit
# (docs/cli.md promises both).
set -euo pipefail
inc=$1
shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
all=""
for h in "$@"; do
  printf '#include "%s"\nint main(void) { return 0; }\n' "$h" > "$tmp/one.c"
  cp "$tmp/one.c" "$tmp/one.cpp"
  gcc -std=c99 -Wall -Wextra -Werror -pedantic -I"$inc" -c "$tmp/one.c" -o /dev/null
  g++ -std=c++17 -Wall -Wextra -Werror -pedantic -I"$inc" -c "$tmp/one.cpp" -o /dev/null
  all+="#include \"$h\"\n"
done
printf "$all"'int main(void) { return 0; }\n' > "$tmp/all.c"
cp "$tmp/all.c" "$tmp/all.cpp"
gcc -std=c99 -Wall -Wextra -Werror -pedantic -I"$inc" -c "$tmp/all.c" -o /dev/null
g++ -std=c++17 -Wall -Wextra -Werror -pedantic -I"$inc" -c "$tmp/all.cpp" -o /dev/null
echo "$# headers compile as C99 and C++17"
