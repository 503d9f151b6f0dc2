#!/bin/sh
# Install feederd as a systemd service: a venv under /opt/feederd, the system user feederd,
# config under /etc/feederd (0640 root:feederd), state under /var/lib/feederd (0750).
# Run as root from a checkout:  sh deploy/install.sh [--start] [--coordinator]
# Re-running upgrades the venv and keeps an existing config. --coordinator also installs the
# fleet coordinator (`feederd coordinate`, for the control room): its unit
# feederd-coordinator.service and its config under /etc/feederd-coordinator (FLEET_CONFIG_DIR),
# state under /var/lib/feederd-coordinator (systemd's StateDirectory=).
#
# Environment: PREFIX, CONFIG_DIR, STATE_DIR, UNIT_DIR (the paths above; the unit is rewritten
# to match), PYTHON (python3), PIP_OPTS (extra pip options, e.g. --no-index --find-links DIR
# on a site without internet) and DESTDIR: lay everything down under another root (a test, a
# package build). With DESTDIR the real system is not touched: no user or group is created,
# files keep the installing user as owner (the modes are the same), systemctl is not run; the
# venv works in place but not when moved out of DESTDIR.
set -eu

START=no COORDINATOR=no
for arg in "$@"; do
    case $arg in
        --start) START=yes ;;
        --coordinator) COORDINATOR=yes ;;
        *) echo "install.sh: unknown option $arg (use --start, --coordinator)" >&2; exit 2 ;;
    esac
done

PREFIX=${PREFIX:-/opt/feederd}
CONFIG_DIR=${CONFIG_DIR:-/etc/feederd}
STATE_DIR=${STATE_DIR:-/var/lib/feederd}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
FLEET_CONFIG_DIR=${FLEET_CONFIG_DIR:-/etc/feederd-coordinator}
PYTHON=${PYTHON:-python3}
PIP_OPTS=${PIP_OPTS:-}
DESTDIR=${DESTDIR:-}
SRC=$(cd "$(dirname "$0")/.." && pwd)

say() { echo "install.sh: $*"; }

if [ -n "$DESTDIR" ]; then
    DESTDIR=$(mkdir -p "$DESTDIR" && cd "$DESTDIR" && pwd)
    say "staging into DESTDIR=$DESTDIR: skipping useradd, ownership and systemctl"
    ROOT_OWNS="" FEEDERD_OWNS="" CONFIG_GROUP=""
elif [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or set DESTDIR to stage the files elsewhere)" >&2
    exit 2
else
    ROOT_OWNS="-o root -g root" FEEDERD_OWNS="-o feederd -g feederd" CONFIG_GROUP="-o root -g feederd"
fi
D=$DESTDIR

umask 022
if [ -z "$D" ]; then
    if ! getent passwd feederd >/dev/null; then
        useradd --system --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin \
            --user-group feederd
    fi
    # serial ports for Modbus RTU
    if getent group dialout >/dev/null; then usermod -a -G dialout feederd; fi
fi

install -d -m 0755 "$D$PREFIX"
"$PYTHON" -m venv "$D$PREFIX/venv"
# shellcheck disable=SC2086 # PIP_OPTS is a list of options
"$D$PREFIX/venv/bin/python" -m pip install --quiet $PIP_OPTS --upgrade pip
# pip builds in the source tree (build/, *.egg-info): build from a copy, so the checkout is
# only read (it may be read-only, or another user's), without its venv, VCS data and caches
BUILD=$(mktemp -d "${TMPDIR:-/tmp}/feederd-install.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
tar -C "$SRC" -cf "$BUILD/src.tar" --exclude=./.git --exclude=./.venv --exclude=./build \
    --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ --exclude='./.*_cache' \
    --exclude=./.hypothesis --exclude=./out .
mkdir "$BUILD/src"
tar -C "$BUILD/src" -xf "$BUILD/src.tar"
# shellcheck disable=SC2086
"$D$PREFIX/venv/bin/python" -m pip install --quiet $PIP_OPTS "$BUILD/src"
install -m 0644 "$SRC/README.md" "$D$PREFIX/README.md"

# shellcheck disable=SC2086 # the owner options are empty under DESTDIR
install -d -m 0750 $CONFIG_GROUP "$D$CONFIG_DIR"
# shellcheck disable=SC2086
install -d -m 0700 $ROOT_OWNS "$D$CONFIG_DIR/credentials"
if [ ! -e "$D$CONFIG_DIR/feederd.toml" ]; then
    # shellcheck disable=SC2086
    install -m 0640 $CONFIG_GROUP "$SRC/deploy/feederd.example.toml" "$D$CONFIG_DIR/feederd.toml"
    say "edit $CONFIG_DIR/feederd.toml, then: systemctl restart feederd"
fi
if [ ! -e "$D$CONFIG_DIR/credentials/mqtt-password" ]; then
    # an empty placeholder so LoadCredential= finds a file; put the broker password here
    # shellcheck disable=SC2086
    install -m 0600 $ROOT_OWNS /dev/null "$D$CONFIG_DIR/credentials/mqtt-password"
fi
# shellcheck disable=SC2086
install -d -m 0750 $FEEDERD_OWNS "$D$STATE_DIR"

# the unit names the install paths: rewritten when they are not the defaults
install -d -m 0755 "$D$UNIT_DIR"
sed -e "s|/opt/feederd|$PREFIX|g" -e "s|/etc/feederd|$CONFIG_DIR|g" \
    "$SRC/deploy/feederd.service" >"$D$UNIT_DIR/feederd.service.tmp"
chmod 0644 "$D$UNIT_DIR/feederd.service.tmp"
mv "$D$UNIT_DIR/feederd.service.tmp" "$D$UNIT_DIR/feederd.service"
if [ -z "$D" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable feederd.service
    if [ "$START" = yes ]; then
        systemctl restart feederd.service
    fi
elif [ -n "$D" ]; then
    say "DESTDIR: systemctl daemon-reload/enable not run"
fi
"$D$PREFIX/venv/bin/feederd" check --config "$D$CONFIG_DIR/feederd.toml"

if [ "$COORDINATOR" = yes ]; then
    # shellcheck disable=SC2086
    install -d -m 0750 $CONFIG_GROUP "$D$FLEET_CONFIG_DIR"
    # shellcheck disable=SC2086
    install -d -m 0700 $ROOT_OWNS "$D$FLEET_CONFIG_DIR/credentials"
    if [ ! -e "$D$FLEET_CONFIG_DIR/fleet.toml" ]; then
        # shellcheck disable=SC2086
        install -m 0640 $CONFIG_GROUP "$SRC/deploy/fleet.example.toml" "$D$FLEET_CONFIG_DIR/fleet.toml"
        say "edit $FLEET_CONFIG_DIR/fleet.toml, then: systemctl restart feederd-coordinator"
    fi
    if [ ! -e "$D$FLEET_CONFIG_DIR/credentials/mqtt-password" ]; then
        # shellcheck disable=SC2086
        install -m 0600 $ROOT_OWNS /dev/null "$D$FLEET_CONFIG_DIR/credentials/mqtt-password"
    fi
    sed -e "s|/etc/feederd-coordinator|$FLEET_CONFIG_DIR|g" -e "s|/opt/feederd|$PREFIX|g" \
        "$SRC/deploy/feederd-coordinator.service" >"$D$UNIT_DIR/feederd-coordinator.service.tmp"
    chmod 0644 "$D$UNIT_DIR/feederd-coordinator.service.tmp"
    mv "$D$UNIT_DIR/feederd-coordinator.service.tmp" "$D$UNIT_DIR/feederd-coordinator.service"
    if [ -z "$D" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl enable feederd-coordinator.service
        if [ "$START" = yes ]; then
            systemctl restart feederd-coordinator.service
        fi
    fi
    "$D$PREFIX/venv/bin/feederd" coordinate check --config "$D$FLEET_CONFIG_DIR/fleet.toml"
fi
