#!/usr/bin/env bash
# Prepare a Debian host for netwarden's eBPF agent (run as root; idempotent).
#
# bcc compiles the probes against kernel headers found at /lib/modules/$(uname -r)/build. When
# the running kernel has no headers package of its own (a newer or custom kernel), link the
# newest Debian headers there: bcc then finds its include files, and the probes read kernel
# structs only at offsets taken from the running kernel's BTF (/sys/kernel/btf/vmlinux), never
# from these headers' layouts. Also mounts tracefs and debugfs when they are absent.
set -euo pipefail
kernel="$(uname -r)"
modules="/lib/modules/${kernel}"
if [ ! -e "${modules}/build" ]; then
    headers="$(ls -d /usr/src/linux-headers-*-amd64 /usr/src/linux-headers-*-arm64 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -z "${headers}" ]; then
        echo "no kernel headers in /usr/src: apt-get install linux-headers-amd64" >&2
        exit 1
    fi
    common="${headers%-amd64}"; common="${common%-arm64}-common"
    mkdir -p "${modules}"
    ln -sfn "${headers}" "${modules}/build"
    [ -d "${common}" ] && ln -sfn "${common}" "${modules}/source"
    echo "linked ${modules}/build -> ${headers} (kernel ${kernel} has no headers package)"
fi
if ! mountpoint -q /sys/kernel/tracing; then
    mount -t tracefs tracefs /sys/kernel/tracing && echo "mounted tracefs on /sys/kernel/tracing"
fi
if ! mountpoint -q /sys/kernel/debug; then
    mount -t debugfs debugfs /sys/kernel/debug && echo "mounted debugfs on /sys/kernel/debug"
fi
