#!/bin/sh
# postrm of the edged .deb. purge removes the data (undelivered outbox messages included) and
# the permission overrides; the edged user stays, as Debian policy recommends.
set -e
if [ "$1" = purge ]; then
	for p in /etc/edged/edged.yaml /etc/edged /var/lib/edged; do
		if dpkg-statoverride --list "$p" >/dev/null 2>&1; then
			dpkg-statoverride --remove "$p"
		fi
	done
	rm -rf /var/lib/edged
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null || true
fi
exit 0
