#!/usr/bin/env bash
# Make the TLS files of a dsoftmax Dask cluster with openssl: a private certificate authority
# (CA) and one certificate per role, all signed by it.
#
#   make-certs.sh [-d DAYS] OUT_DIR [HOST ...]
#
# writes into OUT_DIR (created if needed):
#   ca.pem                           the CA certificate: every node and client needs it
#   ca.key                           the CA private key: keep it OFF the cluster, it signs new members
#   scheduler.pem / scheduler.key    for `dask scheduler` (cluster/hosts/start-scheduler.sh)
#   worker.pem    / worker.key       for `dask worker`    (cluster/hosts/start-worker.sh)
#   client.pem    / client.key       for `dsoftmax ... --tls-ca-file ca.pem --tls-cert client.pem
#                                        --tls-key client.key`
#
# Every certificate names 127.0.0.1 and localhost, plus each HOST given (a DNS name or an IP
# address), as subject alternative names. Dask itself does not check host names (it admits
# any peer whose certificate the CA signed), but other TLS clients do.
#
# If OUT_DIR already holds ca.pem and ca.key, that CA is reused and only the three role
# certificates are made again (e.g. to add a host name); delete both CA files to start over.
# Keys are written readable by their owner only (umask 077).
#
# Example: the CA and certificates for a scheduler at 10.0.0.5 / scheduler.example.org:
#   cluster/tls/make-certs.sh certs 10.0.0.5 scheduler.example.org
#   cluster/hosts/start-scheduler.sh       # with DSOFTMAX_TLS_DIR=certs, see that script
#   dsoftmax train data.zarr --model model --scheduler tls://10.0.0.5:8786 \
#       --tls-ca-file certs/ca.pem --tls-cert certs/client.pem --tls-key certs/client.key
set -euo pipefail

readonly PROG=make-certs.sh
readonly ROLES=(scheduler worker client)
days=365

usage() {
    sed -n '5p' "$0" | sed 's/^#   /usage: /' >&2
    echo "  -d DAYS  validity of every new certificate in days (default $days)" >&2
    exit 2
}

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

while getopts ":d:h" option; do
    case $option in
        d) days=$OPTARG ;;
        h) usage ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[[ $# -ge 1 ]] || usage
out_dir=$1
shift

[[ $days =~ ^[1-9][0-9]*$ ]] || die "-d must be a positive number of days, got '$days'"
command -v openssl >/dev/null 2>&1 \
    || die "openssl not found. Install it (e.g. apt-get install openssl) and run $PROG again."

# Subject alternative names: an IP address goes in as IP:, anything else must be a DNS name.
san="DNS:localhost,IP:127.0.0.1"
for host in "$@"; do
    if [[ $host =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ || $host =~ ^[0-9A-Fa-f:]+:[0-9A-Fa-f:.]*$ ]]; then
        san+=",IP:$host"
    elif [[ $host =~ ^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$ ]]; then
        san+=",DNS:$host"
    else
        die "'$host' is neither an IP address nor a DNS name; pass e.g. 10.0.0.5 or scheduler.example.org"
    fi
done

umask 077
mkdir -p "$out_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Our own configuration, so that the result does not depend on the system's openssl.cnf.
# Every node acts as TLS server and client (workers listen and connect), hence both usages.
cat >"$work/openssl.cnf" <<CNF
[req]
distinguished_name = subject
prompt = no

[subject]
CN = dsoftmax

[ca_extensions]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[node_extensions]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = $san
CNF

new_key_options=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

if [[ -f $out_dir/ca.pem && -f $out_dir/ca.key ]]; then
    echo "$PROG: reusing the CA in $out_dir/ca.pem"
else
    openssl req -x509 "${new_key_options[@]}" -sha256 -days "$days" \
        -config "$work/openssl.cnf" -extensions ca_extensions \
        -subj "/CN=dsoftmax cluster CA" \
        -keyout "$out_dir/ca.key" -out "$out_dir/ca.pem" 2>"$work/log" \
        || die "openssl could not make the CA: $(cat "$work/log")"
    chmod 644 "$out_dir/ca.pem"
    echo "$PROG: made a new CA: $out_dir/ca.pem (private key $out_dir/ca.key)"
fi

for role in "${ROLES[@]}"; do
    openssl req -new "${new_key_options[@]}" -config "$work/openssl.cnf" \
        -subj "/CN=dsoftmax $role" \
        -keyout "$work/$role.key" -out "$work/$role.csr" 2>"$work/log" \
        || die "openssl could not make the $role key: $(cat "$work/log")"
    openssl x509 -req -in "$work/$role.csr" -CA "$out_dir/ca.pem" -CAkey "$out_dir/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -sha256 -days "$days" \
        -extfile "$work/openssl.cnf" -extensions node_extensions \
        -out "$work/$role.pem" 2>"$work/log" \
        || die "openssl could not sign the $role certificate: $(cat "$work/log")"
    chmod 644 "$work/$role.pem"
    mv -f "$work/$role.key" "$out_dir/$role.key"
    mv -f "$work/$role.pem" "$out_dir/$role.pem"
done

echo "$PROG: wrote ${ROLES[*]} certificates (.pem) and keys (.key) to $out_dir, valid $days days"
echo "$PROG: subject alternative names: $san"
