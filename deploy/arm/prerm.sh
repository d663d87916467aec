#!/bin/sh
# prerm of the edged .deb: stop the service before its binary goes away (not on upgrade:
# postinst restarts it on the new binary).
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	deb-systemd-invoke stop edged.service >/dev/null || true
fi
exit 0
