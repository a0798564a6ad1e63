#!/usr/bin/env bash
# Start the Dask scheduler of a dsoftmax cluster on this host (runs in the foreground; use
# systemd, tmux or nohup to keep it running).
#
#   start-scheduler.sh [EXTRA DASK SCHEDULER OPTIONS ...]
#
# Settings (environment variables):
#   DSOFTMAX_SCHEDULER_HOST    address to listen on (default 127.0.0.1: this host only); set it
#                              to the host's private address, e.g. 10.0.0.5, for a real cluster
#   DSOFTMAX_SCHEDULER_PORT    port (default 8786)
#   DSOFTMAX_DASHBOARD_ADDRESS dashboard address (default 127.0.0.1:8787; it is plain HTTP
#                              without login: reach it through `ssh -L 8787:127.0.0.1:8787`)
#   DSOFTMAX_TLS_DIR           directory made by cluster/tls/make-certs.sh: uses its ca.pem,
#                              scheduler.pem and scheduler.key
#   DSOFTMAX_TLS_CA_FILE, DSOFTMAX_TLS_CERT, DSOFTMAX_TLS_KEY
#                              the three files one by one (override DSOFTMAX_TLS_DIR)
#   DSOFTMAX_ALLOW_PLAIN_TCP   set to 1 to listen on plain tcp:// at a non-loopback address
#   DASK                       the dask command (default: dask, from the environment where
#                              dsoftmax is installed)
#
# With TLS files the scheduler speaks mutual TLS only (tls://) and requires encryption on every
# connection. Without them it speaks plain tcp://, which is neither encrypted nor authenticated:
# anyone who can reach the port can run any code on every worker. This script refuses that on
# a non-loopback address unless DSOFTMAX_ALLOW_PLAIN_TCP=1.
#
# Example (a TLS scheduler at 10.0.0.5, certificates from make-certs.sh in ./certs):
#   DSOFTMAX_TLS_DIR=certs DSOFTMAX_SCHEDULER_HOST=10.0.0.5 cluster/hosts/start-scheduler.sh
#   # on each worker host:
#   DSOFTMAX_TLS_DIR=certs cluster/hosts/start-worker.sh tls://10.0.0.5:8786
#   # on the client:
#   dsoftmax train /shared/train.zarr --model /shared/model --scheduler tls://10.0.0.5:8786 \
#       --tls-ca-file certs/ca.pem --tls-cert certs/client.pem --tls-key certs/client.key
set -euo pipefail

readonly PROG=start-scheduler.sh

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

is_loopback() {
    [[ $1 == localhost || $1 == 127.* || $1 == ::1 || $1 == "[::1]" ]]
}

host=${DSOFTMAX_SCHEDULER_HOST:-127.0.0.1}
port=${DSOFTMAX_SCHEDULER_PORT:-8786}
dashboard=${DSOFTMAX_DASHBOARD_ADDRESS:-127.0.0.1:8787}
dask=${DASK:-dask}
tls_dir=${DSOFTMAX_TLS_DIR:-}
ca_file=${DSOFTMAX_TLS_CA_FILE:-${tls_dir:+$tls_dir/ca.pem}}
cert=${DSOFTMAX_TLS_CERT:-${tls_dir:+$tls_dir/scheduler.pem}}
key=${DSOFTMAX_TLS_KEY:-${tls_dir:+$tls_dir/scheduler.key}}

[[ $port =~ ^[0-9]+$ ]] || die "DSOFTMAX_SCHEDULER_PORT must be a port number, got '$port'"

args=(scheduler --host "$host" --port "$port" --dashboard-address "$dashboard")
if [[ -n $ca_file || -n $cert || -n $key ]]; then
    for pair in "CA file:$ca_file" "certificate:$cert" "key:$key"; do
        name=${pair%%:*}
        path=${pair#*:}
        [[ -n $path ]] || die "TLS needs a CA file, a certificate and a key; the $name is not set (DSOFTMAX_TLS_DIR or DSOFTMAX_TLS_CA_FILE/CERT/KEY)"
        [[ -r $path ]] || die "TLS $name '$path' is not a readable file; make it with cluster/tls/make-certs.sh"
    done
    args+=(--protocol tls --tls-ca-file "$ca_file" --tls-cert "$cert" --tls-key "$key")
    # Also refuse any unencrypted connection this process would make.
    export DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True
    scheme=tls
    client_dir=${tls_dir:-$(dirname "$ca_file")}
    client_tls=" --tls-ca-file $client_dir/ca.pem --tls-cert $client_dir/client.pem --tls-key $client_dir/client.key"
else
    scheme=tcp
    client_tls=""
    if ! is_loopback "$host"; then
        [[ ${DSOFTMAX_ALLOW_PLAIN_TCP:-0} == 1 ]] || die "refusing to listen on plain tcp://$host:$port: anyone who reaches it can run code on every worker. Set DSOFTMAX_TLS_DIR (see cluster/tls/make-certs.sh), or DSOFTMAX_ALLOW_PLAIN_TCP=1 on a private network nobody else can reach"
        echo "$PROG: warning: plain tcp:// on $host: unencrypted and unauthenticated; anyone who can reach port $port can run code on every worker" >&2
    fi
fi

shown_host=$host
[[ $host == 0.0.0.0 || $host == "::" || $host == "[::]" ]] && shown_host="<this host's address>"
echo "$PROG: clients connect with: dsoftmax train DATA --model MODEL --scheduler $scheme://$shown_host:$port$client_tls" >&2
exec "$dask" "${args[@]}" "$@"
