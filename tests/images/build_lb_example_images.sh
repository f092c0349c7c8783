#!/usr/bin/env bash
# Builds offline stand-ins for the two images the reference example
# multi-host-rest-service-with-lb.toml names, tagged exactly as it names them:
#
#   ghcr.io/opencloudtool/example-python-fastapi:latest
#       busybox httpd on port 8000 whose page is "$APP_NAME" (written at start), like the
#       original's FastAPI app that answers with its APP_NAME.
#   ghcr.io/opencloudtool/nginx-with-conf:latest
#       a real nginx (the host's Debian /usr/sbin/nginx and the libraries ldd lists) in a busybox
#       root; at start it writes $NGINX_CONF to /etc/nginx/nginx.conf and runs it in the
#       foreground, as the original image does.
#
# No registry is reachable on CI or dev machines, so both are assembled from host files and
# `docker import`ed; the docker runtime never pulls an image the engine already has. Existing
# images are kept unless --force is given.
set -euo pipefail

APP_IMAGE="ghcr.io/opencloudtool/example-python-fastapi:latest"
NGINX_IMAGE="ghcr.io/opencloudtool/nginx-with-conf:latest"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
NGINX="${NGINX:-/usr/sbin/nginx}"
APPLETS=(sh httpd nc wget sleep cat echo ls env printf mkdir true false)

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help)
            echo "usage: $0 [--force]   (builds $APP_IMAGE and $NGINX_IMAGE from host files)"
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
if [[ ! -x "$NGINX" ]]; then
    echo "error: $NGINX not found (apt-get install nginx)" >&2
    exit 1
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

# A busybox root with minimal users: httpd and nginx resolve user names.
base_rootfs() {
    local root="$1"
    mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev" "$root/run"
    chmod 1777 "$root/tmp"
    cp "$BUSYBOX" "$root/bin/busybox"
    chmod 0755 "$root/bin/busybox"
    for applet in "${APPLETS[@]}"; do
        ln -sf busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n' >"$root/etc/group"
}

import_rootfs() {
    local root="$1" image="$2" cmd="$3"
    tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$workdir/$(basename "$root").tar" .
    docker import --change 'ENV PATH=/bin:/usr/sbin' --change "CMD $cmd" \
        "$workdir/$(basename "$root").tar" "$image" >/dev/null
    echo "built $image"
}

if [[ "$force" -eq 1 ]] || ! docker image inspect "$APP_IMAGE" >/dev/null 2>&1; then
    root="$workdir/app"
    base_rootfs "$root"
    mkdir -p "$root/www"
    cat >"$root/bin/serve-app-name" <<'EOF'
#!/bin/sh
# The page names the app, so a client behind a load balancer sees which one answered.
echo "${APP_NAME:-app}" >/www/index.html
exec httpd -f -p 8000 -h /www
EOF
    chmod 0755 "$root/bin/serve-app-name"
    import_rootfs "$root" "$APP_IMAGE" '["/bin/serve-app-name"]'
else
    echo "$APP_IMAGE already exists (use --force to rebuild)"
fi

if [[ "$force" -eq 1 ]] || ! docker image inspect "$NGINX_IMAGE" >/dev/null 2>&1; then
    root="$workdir/nginx"
    base_rootfs "$root"
    mkdir -p "$root/usr/sbin" "$root/etc/nginx" "$root/var/log/nginx" "$root/var/lib/nginx" \
        "$root/usr/share/nginx" "$root/var/lock"
    cp "$NGINX" "$root/usr/sbin/nginx"
    # The dynamic loader and every library nginx links, at the paths ldd resolves them to.
    for lib in $(ldd "$NGINX" | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    if [[ -f /etc/nginx/mime.types ]]; then
        cp /etc/nginx/mime.types "$root/etc/nginx/mime.types"
    fi
    # Logs to the container's output, as the official nginx image does.
    ln -sf /dev/stdout "$root/var/log/nginx/access.log"
    ln -sf /dev/stderr "$root/var/log/nginx/error.log"
    cat >"$root/bin/nginx-with-conf" <<'EOF'
#!/bin/sh
# The original image's entrypoint: the configuration comes in $NGINX_CONF.
if [ -n "$NGINX_CONF" ]; then
    printf '%s\n' "$NGINX_CONF" >/etc/nginx/nginx.conf
fi
exec nginx -g 'daemon off;'
EOF
    chmod 0755 "$root/bin/nginx-with-conf"
    import_rootfs "$root" "$NGINX_IMAGE" '["/bin/nginx-with-conf"]'
else
    echo "$NGINX_IMAGE already exists (use --force to rebuild)"
fi
