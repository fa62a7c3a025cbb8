#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers on 127.0.0.1:5672: start it, installing Debian's package first if
# it is missing. Used by `make test` and CI.
set -euo pipefail

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if port_open; then exit 0; fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "installing rabbitmq-server (Debian package)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq rabbitmq-server >/dev/null
fi
echo "starting rabbitmq-server"
rabbitmq-server -detached >/dev/null 2>&1 || true
for _ in $(seq 1 90); do
  if port_open && rabbitmqctl -q status >/dev/null 2>&1; then
    rabbitmqctl -q await_startup >/dev/null 2>&1 || true
    exit 0
  fi
  sleep 1
done
echo "RabbitMQ did not start on 127.0.0.1:5672" >&2
exit 1
