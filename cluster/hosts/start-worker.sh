#!/usr/bin/env bash
# Start the Dask workers of a dsoftmax cluster on this host: by default one single-threaded
# worker process per core (runs in the foreground).
#
#   start-worker.sh SCHEDULER_ADDRESS [EXTRA DASK WORKER OPTIONS ...]
#
# SCHEDULER_ADDRESS is tls://host:8786 or tcp://host:8786 (host:8786 takes tls:// when TLS files
# are set, else tcp://); DSOFTMAX_SCHEDULER_ADDRESS is used when it is not given.
#
# Settings (environment variables):
#   DSOFTMAX_WORKER_HOST       address the workers listen on and advertise (default: the one
#                              that routes to the scheduler); the scheduler, the client and the
#                              other workers must reach it
#   DSOFTMAX_NWORKERS          worker processes (default -1: one per core of this host or
#                              container)
#   DSOFTMAX_NTHREADS          threads per process (default 1: NumPy then uses one core each)
#   DSOFTMAX_MEMORY_LIMIT      memory per process (default auto: this host's memory / processes);
#                              together the workers need room for every block of rows of X
#   DSOFTMAX_LOCAL_DIRECTORY   scratch space for spilled blocks (default: Dask's temporary dir)
#   DSOFTMAX_TLS_DIR           directory made by cluster/tls/make-certs.sh: uses its ca.pem,
#                              worker.pem and worker.key
#   DSOFTMAX_TLS_CA_FILE, DSOFTMAX_TLS_CERT, DSOFTMAX_TLS_KEY
#                              the three files one by one (override DSOFTMAX_TLS_DIR)
#   DSOFTMAX_ALLOW_PLAIN_TCP   set to 1 to join a plain tcp:// scheduler on another host
#   DASK                       the dask command (default: dask)
#
# The workers run dsoftmax's functions on their blocks and read the data themselves: dsoftmax
# (with the s3 extra for s3:// data) must be installed where `dask` runs, at the same version
# as on the client, and object-store credentials must be in this environment (e.g.
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION, or an instance role).
#
# Example: DSOFTMAX_TLS_DIR=certs DSOFTMAX_WORKER_HOST=10.0.1.7 \
#              cluster/hosts/start-worker.sh tls://10.0.0.5:8786
# then, on the client: dsoftmax train DATA --model MODEL --scheduler tls://10.0.0.5:8786 \
#              --tls-ca-file certs/ca.pem --tls-cert certs/client.pem --tls-key certs/client.key
set -euo pipefail

readonly PROG=start-worker.sh

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

is_loopback() {
    [[ $1 == localhost || $1 == 127.* || $1 == ::1 || $1 == "[::1]" ]]
}

if [[ $# -ge 1 && $1 != -* ]]; then
    address=$1
    shift
else
    address=${DSOFTMAX_SCHEDULER_ADDRESS:-}
fi
[[ -n $address ]] || die "no scheduler address: pass it first (e.g. tls://10.0.0.5:8786) or set DSOFTMAX_SCHEDULER_ADDRESS"

nworkers=${DSOFTMAX_NWORKERS:--1}
nthreads=${DSOFTMAX_NTHREADS:-1}
memory_limit=${DSOFTMAX_MEMORY_LIMIT:-auto}
dask=${DASK:-dask}
tls_dir=${DSOFTMAX_TLS_DIR:-}
ca_file=${DSOFTMAX_TLS_CA_FILE:-${tls_dir:+$tls_dir/ca.pem}}
cert=${DSOFTMAX_TLS_CERT:-${tls_dir:+$tls_dir/worker.pem}}
key=${DSOFTMAX_TLS_KEY:-${tls_dir:+$tls_dir/worker.key}}
tls=0
[[ -n $ca_file || -n $cert || -n $key ]] && tls=1

if [[ $address != *://* ]]; then
    if [[ $tls == 1 ]]; then address=tls://$address; else address=tcp://$address; fi
fi
scheme=${address%%://*}
location=${address#*://}
scheduler_host=${location%:*}

args=(worker "$address" --nworkers "$nworkers" --nthreads "$nthreads" --memory-limit "$memory_limit")
[[ -n ${DSOFTMAX_WORKER_HOST:-} ]] && args+=(--host "$DSOFTMAX_WORKER_HOST")
[[ -n ${DSOFTMAX_LOCAL_DIRECTORY:-} ]] && args+=(--local-directory "$DSOFTMAX_LOCAL_DIRECTORY")

if [[ $tls == 1 ]]; then
    [[ $scheme == tls ]] || die "TLS files are set but the scheduler address is $address; use tls://$location"
    for pair in "CA file:$ca_file" "certificate:$cert" "key:$key"; do
        name=${pair%%:*}
        path=${pair#*:}
        [[ -n $path ]] || die "TLS needs a CA file, a certificate and a key; the $name is not set (DSOFTMAX_TLS_DIR or DSOFTMAX_TLS_CA_FILE/CERT/KEY)"
        [[ -r $path ]] || die "TLS $name '$path' is not a readable file; make it with cluster/tls/make-certs.sh"
    done
    args+=(--tls-ca-file "$ca_file" --tls-cert "$cert" --tls-key "$key")
    export DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True
elif [[ $scheme == tls ]]; then
    die "$address needs TLS files: set DSOFTMAX_TLS_DIR (see cluster/tls/make-certs.sh)"
elif ! is_loopback "$scheduler_host"; then
    [[ ${DSOFTMAX_ALLOW_PLAIN_TCP:-0} == 1 ]] || die "refusing to join plain $address: anyone who reaches the cluster can run code on these workers. Set DSOFTMAX_TLS_DIR (see cluster/tls/make-certs.sh), or DSOFTMAX_ALLOW_PLAIN_TCP=1 on a private network nobody else can reach"
    echo "$PROG: warning: plain $address: unencrypted and unauthenticated" >&2
fi

# Workers keep hundreds of MB of blocks: NumPy's transparent huge pages make the kernel compact
# memory on every large allocation, and loading them slows down (docs/scaling.md, "Loading").
export NUMPY_MADVISE_HUGEPAGE=${NUMPY_MADVISE_HUGEPAGE:-0}
exec "$dask" "${args[@]}" "$@"
