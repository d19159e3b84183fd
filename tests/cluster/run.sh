#!/usr/bin/env bash
# `make cluster`: three nats-servers clustered with JetStream and three ctxd nodes on them,
# all on loopback, each node serving the web client. Ctrl-C stops everything.
#   NATS clients 4222-4224 (routes 6222-6224), ctxd 50051-50053, metrics 9464-9466.
# Extra ctxd flags: CTXD_ARGS="--mock-delay-ms 100".
set -euo pipefail
cd "$(dirname "$0")/../.."

ctxd=target/release/ctxd
nats_server=${CTXD_NATS_SERVER:-$(command -v nats-server)}
dir=$(mktemp -d -t ctxd-cluster.XXXXXX)
pids=()

stop() {
    trap - INT TERM EXIT
    echo
    echo "stopping the cluster"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap stop INT TERM EXIT

# The NATS servers speak TLS and require a user and password, and the nodes share a secret:
# whoever can reach NATS or a node's port cannot read the data or pose as a node
# (docs/security.md). All are made fresh for each run, readable by this user only.
umask 077
nats_password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/cluster.secret"
export NATS_USER=ctxd NATS_PASSWORD=$nats_password
# A CA for this run, and the servers' certificate for 127.0.0.1 it signs.
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=ctxd make cluster CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req "${ec[@]}" -subj "/CN=127.0.0.1" -keyout "$dir/nats.key" -out "$dir/nats.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$dir/nats.ext"
openssl x509 -req -in "$dir/nats.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
    -extfile "$dir/nats.ext" -out "$dir/nats.pem" 2>/dev/null

urls=""
for i in 1 2 3; do
    routes=""
    for j in 1 2 3; do
        if [ "$j" != "$i" ]; then routes="$routes${routes:+, }nats://127.0.0.1:$((6221 + j))"; fi
    done
    cat > "$dir/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$((4221 + i))
jetstream {
  store_dir: "$dir/n$i"
  sync_interval: always
}
cluster {
  name: ctxd
  listen: 127.0.0.1:$((6221 + i))
  routes: [$routes]
}
authorization {
  user: ctxd
  password: "$nats_password"
}
tls {
  cert_file: "$dir/nats.pem"
  key_file: "$dir/nats.key"
}
CONF
    "$nats_server" -c "$dir/n$i.conf" > "$dir/n$i.log" 2>&1 &
    pids+=($!)
    urls="$urls${urls:+,}nats://127.0.0.1:$((4221 + i))"
done

for i in 1 2 3; do
    # shellcheck disable=SC2086
    RUST_LOG=${RUST_LOG:-info} "$ctxd" --store nats --nats-url "$urls" --node-id "node$i" \
        --cluster-secret-file "$dir/cluster.secret" --nats-tls-ca "$dir/ca.pem" \
        --listen "127.0.0.1:$((50050 + i))" --metrics-listen "127.0.0.1:$((9463 + i))" \
        --web-dir client-web/dist ${CTXD_ARGS:-} > "$dir/node$i.log" 2>&1 &
    pids+=($!)
    echo "node$i: pid $!, http://127.0.0.1:$((50050 + i)) (gRPC, grpc-web and the web client), log $dir/node$i.log"
done

for i in 1 2 3; do
    for _ in $(seq 1 120); do
        if grep -q "ctxd listening on" "$dir/node$i.log"; then break; fi
        if ! kill -0 "${pids[$((i + 2))]}" 2>/dev/null; then
            echo "node$i exited:" >&2
            cat "$dir/node$i.log" >&2
            exit 1
        fi
        sleep 0.5
    done
done
echo "all three nodes are serving; kill -9 one of the pids above to watch another take over. Ctrl-C stops."
wait
