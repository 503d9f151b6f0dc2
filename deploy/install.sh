#!/bin/sh
# Install feederd as a systemd service: a venv under /opt/feederd, the system user feederd,
# config under /etc/feederd (0640 root:feederd), state under /var/lib/feederd (0750).
# Run as root from a checkout:  sh deploy/install.sh [--start]
# Re-running upgrades the venv and keeps an existing config.
set -eu

PREFIX=${PREFIX:-/opt/feederd}
CONFIG_DIR=${CONFIG_DIR:-/etc/feederd}
STATE_DIR=${STATE_DIR:-/var/lib/feederd}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
PYTHON=${PYTHON:-python3}
SRC=$(cd "$(dirname "$0")/.." && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root" >&2
    exit 2
fi

umask 022
if ! getent passwd feederd >/dev/null; then
    useradd --system --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin \
        --user-group feederd
fi
# serial ports for Modbus RTU
getent group dialout >/dev/null && usermod -a -G dialout feederd

install -d -m 0755 "$PREFIX"
"$PYTHON" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install --quiet --upgrade pip
"$PREFIX/venv/bin/python" -m pip install --quiet "$SRC"
install -m 0644 "$SRC/README.md" "$PREFIX/README.md"

install -d -m 0750 -o root -g feederd "$CONFIG_DIR"
install -d -m 0700 -o root -g root "$CONFIG_DIR/credentials"
if [ ! -e "$CONFIG_DIR/feederd.toml" ]; then
    install -m 0640 -o root -g feederd "$SRC/deploy/feederd.example.toml" "$CONFIG_DIR/feederd.toml"
    echo "install.sh: edit $CONFIG_DIR/feederd.toml, then: systemctl restart feederd"
fi
if [ ! -e "$CONFIG_DIR/credentials/mqtt-password" ]; then
    # an empty placeholder so LoadCredential= finds a file; put the broker password here
    install -m 0600 -o root -g root /dev/null "$CONFIG_DIR/credentials/mqtt-password"
fi
install -d -m 0750 -o feederd -g feederd "$STATE_DIR"

install -m 0644 "$SRC/deploy/feederd.service" "$UNIT_DIR/feederd.service"
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable feederd.service
    if [ "${1:-}" = "--start" ]; then
        systemctl restart feederd.service
    fi
fi
"$PREFIX/venv/bin/feederd" check --config "$CONFIG_DIR/feederd.toml"
