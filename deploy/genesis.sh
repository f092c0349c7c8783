#!/usr/bin/env bash
# Turn a fresh Debian VM into an oct node: packages, a venv with one pinned oct, the systemd unit,
# `oct-ctl bootstrap` (node files from the config, IMDSv2 and SSM), then start the daemon.
#
# On AWS cloud-init writes /etc/oct/bootstrap.json and the unit, then runs this with the CLI's own
# version. By hand, as root, after writing the config:
#     bash genesis.sh 'opencloudtool==0.1.0'
# Safe to run again: pip keeps an installed pin, bootstrap keeps unchanged node files.
set -euo pipefail

spec="${1:-}"
config="${OCT_BOOTSTRAP_CONFIG:-/etc/oct/bootstrap.json}"
venv=/opt/oct
data_dir=/var/lib/oct
unit=/etc/systemd/system/oct-ctl.service

die() { echo "genesis.sh: $*" >&2; exit 2; }

case "$spec" in
    opencloudtool==*|*.whl|*.whl\#sha256=*) ;;
    "") die "usage: genesis.sh PACKAGE_SPEC, e.g. 'opencloudtool==0.1.0' (the version of the CLI)" ;;
    *) die "'$spec' is not pinned: expected opencloudtool==VERSION or a .whl path or URL" ;;
esac
[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and a systemd unit)"
[ -r "$config" ] || die "no bootstrap config at $config (cloud-init writes it; see docs/aws.md)"
command -v apt-get >/dev/null || die "needs a Debian-family system (apt-get)"

echo "== packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends ca-certificates python3 python3-venv docker.io
systemctl enable --now docker.service

echo "== oct ($spec) in $venv"
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check "$spec"
"$venv/bin/oct-ctl" --version

echo "== systemd unit"
if [ ! -f "$unit" ]; then
    # By hand: the unit that ships inside the package (cloud-init has written it already).
    "$venv/bin/python" -c 'import sys; from octctl.providers.aws.user_data import deploy_file
sys.stdout.write(deploy_file("oct-ctl.service"))' >"$unit"
fi
systemctl daemon-reload

echo "== node files"
"$venv/bin/oct-ctl" bootstrap --config "$config" --data-dir "$data_dir"

echo "== start"
systemctl enable --now oct-ctl.service
echo "genesis.sh: oct-ctl is running; journalctl -u oct-ctl shows its log"
