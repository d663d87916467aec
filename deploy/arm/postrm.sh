#!/bin/sh
# postrm of the edged .deb. purge removes the data (undelivered outbox messages included) and
# the permission overrides; the edged user stays, as Debian policy recommends.
set -e
# remove: mask, so that nothing starts the removed service; purge: forget its state. As
# debhelper does; deb-systemd-helper may be gone already when init-system-helpers was removed.
if command -v deb-systemd-helper >/dev/null 2>&1; then
	case "$1" in
	remove) deb-systemd-helper mask edged.service >/dev/null || true ;;
	purge)
		deb-systemd-helper purge edged.service >/dev/null || true
		deb-systemd-helper unmask edged.service >/dev/null || true
		;;
	esac
fi
if [ "$1" = purge ]; then
	for p in /etc/edged/edged.yaml /etc/edged /var/lib/edged; do
		if dpkg-statoverride --list "$p" >/dev/null 2>&1; then
			dpkg-statoverride --remove "$p"
		fi
	done
	rm -rf /var/lib/edged
fi
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
exit 0
