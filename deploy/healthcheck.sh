#!/bin/bash
# Container health check for every Snapkeeper binary, with nothing but bash (the image has no
# curl and no gRPC client):
#
#   snapkeeper-healthcheck                     # check whichever binary runs as PID 1
#   snapkeeper-healthcheck http HOST:PORT PATH # HTTP GET must answer 200
#   snapkeeper-healthcheck tcp HOST:PORT       # the port must accept a connection
#
# The gateway's /healthz is 200 only when every service answers SERVING, so it is the suite's
# real health. A gRPC service gets a TCP check here; Kubernetes uses native gRPC probes instead.
set -euo pipefail

TIMEOUT=4

# "0.0.0.0:8000" -> "127.0.0.1 8000"; a wildcard listener is reached on loopback.
target() {
  local address="$1" host port
  port="${address##*:}"
  host="${address%:*}"
  host="${host#[}"
  host="${host%]}"
  case "$host" in
    "" | 0.0.0.0 | ::) host=127.0.0.1 ;;
  esac
  echo "$host" "$port"
}

check_tcp() {
  local host port
  read -r host port < <(target "$1")
  timeout "$TIMEOUT" bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null
}

check_http() {
  local host port path="$2"
  read -r host port < <(target "$1")
  # HTTP/1.0 with Connection: close, so the server ends the response and `read` returns.
  timeout "$TIMEOUT" bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" "$2" "$0" >&3
    read -r _ status _ <&3
    [[ "$status" == 200 ]]
  ' "$host" "$port" "$path" 2>/dev/null
}

case "${1:-auto}" in
  http) check_http "${2:?host:port}" "${3:-/healthz}" ;;
  tcp) check_tcp "${2:?host:port}" ;;
  auto)
    binary="$(basename "$(readlink /proc/1/exe 2>/dev/null || cat /proc/1/comm)")"
    case "$binary" in
      gateway | snapkeeper) check_http "${GATEWAY_LISTEN:-127.0.0.1:8000}" /healthz ;;
      policy-svc) check_tcp "${POLICY_SVC_LISTEN:-127.0.0.1:50051}" ;;
      identity-svc) check_tcp "${IDENTITY_SVC_LISTEN:-127.0.0.1:50052}" ;;
      snapshot-svc) check_tcp "${SNAPSHOT_SVC_LISTEN:-127.0.0.1:50053}" ;;
      audit-svc) check_tcp "${AUDIT_SVC_LISTEN:-127.0.0.1:50054}" ;;
      *)
        echo "snapkeeper-healthcheck: PID 1 is $binary; pass 'http HOST:PORT PATH' or 'tcp HOST:PORT'" >&2
        exit 1
        ;;
    esac
    ;;
  *)
    echo "usage: snapkeeper-healthcheck [http HOST:PORT [PATH] | tcp HOST:PORT]" >&2
    exit 2
    ;;
esac
