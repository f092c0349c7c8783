#!/usr/bin/env bash
# Install exactly one oct wheel into a venv, refusing anything whose sha256 differs.
#
#     install-oct.sh WHEEL_URL_OR_PATH SHA256 VENV
#
# The wheel is the one the deploying CLI was running (octcli/artifact.py), fetched from the
# cluster's private bucket through a presigned URL. Its dependencies are installed first from the
# hash-pinned lock inside it (octctl/_deploy/requirements.lock), so the whole tree is pinned by
# the one hash in the user data; oct itself never comes from a package index.
# Exit codes: 2 usage, 3 hash mismatch (nothing installed), other: download or pip failure.
set -euo pipefail

die() { echo "install-oct.sh: $*" >&2; exit 2; }

[ "$#" -eq 3 ] || die "usage: install-oct.sh WHEEL_URL_OR_PATH SHA256 VENV"
source="$1" sha="$2" venv="$3"
[[ "$sha" =~ ^[0-9a-f]{64}$ ]] || die "'$sha' is not a sha256 (64 lowercase hex digits)"
name="$(basename "${source%%\?*}")"
[[ "$name" =~ ^oct_cloud-[^-/]+-py3-none-any\.whl$ ]] || die "'$name' is not an oct wheel (oct_cloud-VERSION-py3-none-any.whl)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
wheel="$work/$name"

echo "== fetching $name"
python3 - "$source" "$wheel" <<'PY'
import shutil, sys, time, urllib.request
source, target = sys.argv[1], sys.argv[2]
if "://" not in source:
    shutil.copyfile(source, target)
    sys.exit(0)
for attempt in range(5):
    try:
        with urllib.request.urlopen(source, timeout=60) as answer, open(target, "wb") as out:
            shutil.copyfileobj(answer, out)
        sys.exit(0)
    except OSError as e:
        print(f"install-oct.sh: download failed ({e}); retrying", file=sys.stderr)
        time.sleep(2 * (attempt + 1))
sys.exit("install-oct.sh: could not download the oct wheel")
PY

actual="$(sha256sum "$wheel" | cut -d' ' -f1)"
if [ "$actual" != "$sha" ]; then
    echo "install-oct.sh: REFUSED $name: its sha256 is $actual, the deploying CLI shipped $sha" \
         "(a corrupted download or a tampered bucket); oct is not installed" >&2
    exit 3
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input install --quiet --no-cache-dir)

echo "== dependencies, hash-pinned by the lock inside the wheel"
"$venv/bin/python" - "$wheel" "$work/requirements.lock" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, open(sys.argv[2], "wb") as out:
    out.write(wheel.read("octctl/_deploy/requirements.lock"))
PY
"${pip[@]}" --require-hashes --no-deps -r "$work/requirements.lock"

echo "== oct from $name (sha256 $sha)"
printf '%s --hash=sha256:%s\n' "$wheel" "$sha" >"$work/oct.txt"
"${pip[@]}" --require-hashes --no-deps --force-reinstall -r "$work/oct.txt"
"$venv/bin/oct-ctl" --version
