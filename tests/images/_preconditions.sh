# Sourced by the image-building scripts: what every offline build needs before it starts, each
# missing piece named with the package that brings it. Expects $BUSYBOX to be set.

require_engine_and_busybox() {
    if ! command -v docker >/dev/null 2>&1; then
        echo "error: the docker CLI is not installed (apt-get install docker.io)" >&2
        exit 1
    fi
    if ! docker info >/dev/null 2>&1; then
        echo "error: the Docker engine is not reachable (start it: dockerd >dockerd.log 2>&1 &)" >&2
        exit 1
    fi
    if [[ ! -x "$BUSYBOX" ]]; then
        echo "error: $BUSYBOX not found (apt-get install busybox-static)" >&2
        exit 1
    fi
    # A dynamically linked busybox would not run in an image without libc.
    if command -v file >/dev/null 2>&1 && ! file -L "$BUSYBOX" | grep -q 'statically linked'; then
        echo "error: $BUSYBOX is not statically linked (apt-get install busybox-static)" >&2
        exit 1
    fi
}
