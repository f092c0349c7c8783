#!/usr/bin/env bash
# Turn a fresh Debian VM into an oct node: packages, a venv with exactly the deploying CLI's oct
# wheel (hash-checked by install-oct.sh), the systemd unit, `oct-ctl bootstrap` (node files from
# the config, IMDSv2 and SSM), then start the daemon.
#
# On AWS cloud-init writes /etc/oct/bootstrap.json, the unit and both scripts, then runs this with
# a presigned link to the wheel in the cluster's bucket and its sha256. By hand, as root, after
# writing the config, with a wheel from `python -c 'from octcli.artifact import build_artifact ...'`:
#     bash genesis.sh ./oct_cloud-0.1.0-py3-none-any.whl "$(sha256sum oct_cloud-*.whl | cut -d' ' -f1)"
# Safe to run again: the wheel is reinstalled, bootstrap keeps unchanged node files.
set -euo pipefail

wheel="${1:-}"
sha="${2:-}"
config="${OCT_BOOTSTRAP_CONFIG:-/etc/oct/bootstrap.json}"
venv=/opt/oct
data_dir=/var/lib/oct
unit=/etc/systemd/system/oct-ctl.service
installer="$(dirname "${BASH_SOURCE[0]}")/install-oct.sh"  # beside this script, here and on a VM

die() { echo "genesis.sh: $*" >&2; exit 2; }

[ -n "$wheel" ] && [ -n "$sha" ] || die "usage: genesis.sh WHEEL_URL_OR_PATH SHA256 (the deploying CLI's oct wheel)"
[[ "$sha" =~ ^[0-9a-f]{64}$ ]] || die "'$sha' is not a sha256: the wheel must be pinned by its hash"
[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and a systemd unit)"
[ -r "$config" ] || die "no bootstrap config at $config (cloud-init writes it; see docs/aws.md)"
command -v apt-get >/dev/null || die "needs a Debian-family system (apt-get)"

echo "== packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends ca-certificates python3 python3-venv docker.io haproxy
systemctl enable --now docker.service
# The package's own haproxy.service would serve /etc/haproxy: oct-ctl runs the node's ingress itself.
systemctl disable --now haproxy.service || true
# The ingress configuration needs HAProxy 2.6 or later (option idle-close-on-response): Debian 12's
# stable series is 2.6.x, kept there with its security updates; an older one stops the node here.
haproxy_version="$(haproxy -v | sed -n 's/^HAProxy version \([0-9]*\.[0-9]*\).*/\1/p')"
printf '%s\n2.6\n' "$haproxy_version" | sort -V -C -r 2>/dev/null \
    || die "HAProxy $haproxy_version is too old for the ingress: oct needs 2.6 or later"

echo "== service user"
# Process services run as this unprivileged user, never as oct-ctl's root (docs/security.md).
id -u oct-svc >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin oct-svc

echo "== oct in $venv"
bash "$installer" "$wheel" "$sha" "$venv"

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
