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

# Service state through deb-systemd-helper/-invoke (init-system-helpers), as debhelper does:
# they record the state for purge and honour policy-rc.d in image builds and chroots.
start=no
if [ "$1" = configure ]; then
	deb-systemd-helper unmask edged.service >/dev/null || true
	if [ -z "$2" ]; then
		# First install: enable and start edged only on a config that passes its own check.
		# The shipped config does (loopback-only broker, no connectors, no serial port); a
		# config left from an earlier install that does not is not started on every boot.
		if edged check -c /etc/edged/edged.yaml >/dev/null 2>&1; then
			deb-systemd-helper enable edged.service >/dev/null || true
			start=yes
			echo "edged: enabled on /etc/edged/edged.yaml (MQTT on 127.0.0.1:1883 only). After editing it: sudo edged check -c /etc/edged/edged.yaml && sudo systemctl restart edged"
		else
			deb-systemd-helper update-state edged.service >/dev/null || true
			echo "edged: /etc/edged/edged.yaml does not pass 'edged check': the service is NOT enabled. Fix it (sudo edged check -c /etc/edged/edged.yaml), then: sudo systemctl enable --now edged"
		fi
	elif deb-systemd-helper --quiet was-enabled edged.service; then
		deb-systemd-helper enable edged.service >/dev/null || true
	else
		deb-systemd-helper update-state edged.service >/dev/null || true
	fi
fi

if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
	if [ "$start" = yes ]; then
		deb-systemd-invoke start edged.service >/dev/null || true
	elif [ -n "$2" ]; then
		# Upgrade: restart a running service on the new binary; a stopped one stays stopped.
		deb-systemd-invoke try-restart edged.service >/dev/null || true
	fi
fi
exit 0
