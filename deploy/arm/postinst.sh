#!/bin/sh
# postinst of the edged .deb: system user, permissions, systemd registration.
set -e

if [ "$1" = configure ]; then
	if ! getent group edged >/dev/null; then
		groupadd --system edged
	fi
	if ! getent passwd edged >/dev/null; then
		useradd --system --gid edged --home-dir /var/lib/edged --no-create-home \
			--shell /usr/sbin/nologin --comment "edged IoT gateway daemon" edged
	fi
	# Serial ports (/dev/ttyUSB*, /dev/ttyACM*) belong to group dialout.
	if getent group dialout >/dev/null; then
		usermod --append --groups dialout edged
	fi
	# The config holds password hashes and cloud credentials: root writes, edged reads.
	# dpkg-statoverride lets the administrator choose otherwise, and survives upgrades.
	for spec in "root edged 0750 /etc/edged" "root edged 0640 /etc/edged/edged.yaml" "edged edged 0750 /var/lib/edged"; do
		# shellcheck disable=SC2086 # word splitting of $spec is intended
		set -- $spec
		mkdir -p /var/lib/edged
		if ! dpkg-statoverride --list "$4" >/dev/null 2>&1; then
			dpkg-statoverride --update --add "$1" "$2" "$3" "$4"
		fi
	done
fi

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null || true
	# First install: enable, but don't start a broker on the LAN before the config is edited.
	# Upgrade: restart a running service on the new binary.
	if [ -z "$2" ]; then
		systemctl enable edged.service >/dev/null || true
		echo "edged: edit /etc/edged/edged.yaml, check it with 'edged check -c /etc/edged/edged.yaml', then 'systemctl start edged'"
	else
		systemctl try-restart edged.service >/dev/null || true
	fi
fi
exit 0
