# tests/check.sh: what the shell tests share, sourced after `set -u`: a temporary folder $tmp
# removed on exit, the counters of checks (ok, bad) and finish, which prints them and fails
# when a check failed (a test's last command).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; }
