#!/bin/sh
# install.sh — install edged without the .deb (any systemd distribution). Idempotent: run it
# again to upgrade the binary; an existing /etc/edged/edged.yaml is never overwritten.
#
#   sudo ./install.sh [BINARY]     BINARY defaults to ./edged-linux-<arch> or ../../dist/...
#
# Environment: PREFIX (default /usr, binary goes to $PREFIX/bin/edged), DESTDIR (staging
# root, e.g. for images; skips user creation and systemctl). It never starts a stopped
# service: edit the config first.
set -eu

PREFIX=${PREFIX:-/usr}
DESTDIR=${DESTDIR:-}
here=$(cd "$(dirname "$0")" && pwd)

die() { echo "install.sh: $*" >&2; exit 1; }

arch() {
	case $(uname -m) in
	aarch64 | arm64) echo arm64 ;;
	armv7l | armv8l) echo armv7 ;;
	armv6l) echo armv6 ;;
	x86_64 | amd64) echo amd64 ;;
	*) die "unsupported machine $(uname -m)" ;;
	esac
}

bin=${1:-}
if [ -z "$bin" ]; then
	a=$(arch)
	for c in "$here/edged-linux-$a" "$here/../../dist/edged-linux-$a" "./edged-linux-$a"; do
		if [ -f "$c" ]; then bin=$c; break; fi
	done
fi
if [ -z "$bin" ] || [ ! -f "$bin" ]; then die "no edged binary found: pass its path (make dist builds dist/edged-linux-*)"; fi
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
	die "run as root (sudo $0 $*)"
fi
unit_dir=$DESTDIR/etc/systemd/system
[ "$PREFIX" = /usr ] || echo "install.sh: note: the unit runs /usr/bin/edged; edit $unit_dir/edged.service for PREFIX=$PREFIX"

# 1. the user: system account edged, in dialout for the serial ports.
if [ -z "$DESTDIR" ]; then
	getent group edged >/dev/null || groupadd --system edged
	getent passwd edged >/dev/null ||
		useradd --system --gid edged --home-dir /var/lib/edged --no-create-home \
			--shell /usr/sbin/nologin --comment "edged IoT gateway daemon" edged
	if getent group dialout >/dev/null; then usermod --append --groups dialout edged; fi
fi

# 2. the binary, replaced atomically so a running edged keeps its old inode.
install -d -m 0755 "$DESTDIR$PREFIX/bin"
install -m 0755 "$bin" "$DESTDIR$PREFIX/bin/edged.new"
mv -f "$DESTDIR$PREFIX/bin/edged.new" "$DESTDIR$PREFIX/bin/edged"

# 3. the unit (in /etc: a package-less install owns it) and the config, only if absent.
install -d -m 0755 "$unit_dir"
install -m 0644 "$here/edged.service" "$unit_dir/edged.service"
install -d -m 0750 "$DESTDIR/etc/edged" "$DESTDIR/var/lib/edged"
if [ ! -e "$DESTDIR/etc/edged/edged.yaml" ]; then
	install -m 0640 "$here/edged.yaml" "$DESTDIR/etc/edged/edged.yaml"
	fresh=1
else
	echo "install.sh: keeping the existing /etc/edged/edged.yaml"
	fresh=0
fi
if [ -z "$DESTDIR" ]; then
	chown root:edged /etc/edged /etc/edged/edged.yaml
	chown edged:edged /var/lib/edged
fi

# 4. systemd: reload, enable; restart only a service that was already running.
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	systemctl enable edged.service
	if systemctl is-active --quiet edged.service; then
		systemctl restart edged.service
	else
		[ "$fresh" = 1 ] || echo "install.sh: edged is not running"
		echo "install.sh: edit /etc/edged/edged.yaml, check it with 'edged check -c /etc/edged/edged.yaml', then 'systemctl start edged'"
	fi
fi
"$DESTDIR$PREFIX/bin/edged" version 2>/dev/null || true
echo "install.sh: edged installed"
