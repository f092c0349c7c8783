#!/usr/bin/env bash
# Builds the offline test image oct-test/busybox:latest.
#
# No registry is reachable on CI or dev machines, so the image is assembled from the host's
# statically linked busybox (apt: busybox-static) and `docker import`ed. It is tiny (~2 MB) and
# builds in well under a second, but we still skip the work when the image already exists so every
# test session does not churn image layers. Pass --force to rebuild.
set -euo pipefail

IMAGE="${OCT_TEST_IMAGE:-oct-test/busybox:latest}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
APPLETS=(sh httpd nc wget sleep cat echo ls env printf mkdir true false date)

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help)
            echo "usage: $0 [--force]   (builds $IMAGE from $BUSYBOX)"
            exit 0
            ;;
        *)
            echo "error: unknown argument '$arg' (usage: $0 [--force])" >&2
            exit 2
            ;;
    esac
done

# shellcheck source=tests/images/_preconditions.sh
source "$(dirname "${BASH_SOURCE[0]}")/_preconditions.sh"
require_engine_and_busybox

if [[ "$force" -eq 0 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE already exists (use --force to rebuild)"
    exit 0
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
rootfs="$workdir/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/www" "$rootfs/tmp" "$rootfs/etc" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
chmod 1777 "$rootfs/tmp"
cp "$BUSYBOX" "$rootfs/bin/busybox"
chmod 0755 "$rootfs/bin/busybox"
for applet in "${APPLETS[@]}"; do
    ln -sf busybox "$rootfs/bin/$applet"
done
cat >"$rootfs/www/index.html" <<'EOF'
<!doctype html>
<html><head><title>oct test</title></head><body><h1>oct-test busybox</h1></body></html>
EOF
# httpd resolves uid/gid names and sh looks up users; minimal files keep them quiet.
printf 'root:x:0:0:root:/:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"

tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -cf "$workdir/rootfs.tar" .
docker import \
    --change 'ENV PATH=/bin' \
    --change 'CMD ["/bin/sh"]' \
    "$workdir/rootfs.tar" "$IMAGE" >/dev/null
echo "built $IMAGE"
