#!/usr/bin/env bash
# Stands up (or tears down) chainwatch's single-organisation Hyperledger
# Fabric v2.5 network natively on loopback — one Raft orderer, one peer, the
# channel "chainwatch" — and deploys the chainwatch chaincode as a service.
#
#   FABRIC_BIN=/path/to/fabric/bin deploy/fabric/network.sh up|down|status
#
# Needs Fabric's release binaries (peer, orderer, configtxgen, osnadmin,
# cryptogen) in FABRIC_BIN, the release's config directory (core.yaml,
# orderer.yaml) in FABRIC_CFG (default FABRIC_BIN/../config) and its
# chaincode-as-a-service builder in FABRIC_CCAAS_BUILDER (default
# FABRIC_BIN/../builders/ccaas). Everything the network writes goes under
# FABRIC_NETWORK_DIR (default ./chainwatch-data/fabric); `up` leaves a
# connection profile and the service's identity there for chainwatch.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
: "${FABRIC_BIN:?set FABRIC_BIN to the directory holding Fabric v2.5 peer, orderer, configtxgen, osnadmin and cryptogen}"
FABRIC_BIN="$(cd "$FABRIC_BIN" && pwd)"
FABRIC_CFG="${FABRIC_CFG:-$FABRIC_BIN/../config}"
FABRIC_CCAAS_BUILDER="${FABRIC_CCAAS_BUILDER:-$FABRIC_BIN/../builders/ccaas}"
WORK="${FABRIC_NETWORK_DIR:-$repo/chainwatch-data/fabric}"
CHANNEL=chainwatch
CC_NAME=chainwatch
CC_LABEL=chainwatch_1
CC_ADDR=127.0.0.1:9999
ORDERER=127.0.0.1:7050
ORDERER_ADMIN=127.0.0.1:7053
PEER=127.0.0.1:7051

log() { printf '%s fabric: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; [ "${IN_UP:-}" = 1 ] && down >/dev/null 2>&1; exit 1; }

check_prereqs() {
  for b in peer orderer configtxgen osnadmin cryptogen; do
    [ -x "$FABRIC_BIN/$b" ] || die "$FABRIC_BIN/$b is missing: FABRIC_BIN must hold Fabric's release binaries"
  done
  [ -f "$FABRIC_CFG/core.yaml" ] && [ -f "$FABRIC_CFG/orderer.yaml" ] || die "no core.yaml/orderer.yaml in $FABRIC_CFG (set FABRIC_CFG to the release's config directory)"
  for b in build detect release; do
    [ -x "$FABRIC_CCAAS_BUILDER/bin/$b" ] || die "no chaincode-as-a-service builder at $FABRIC_CCAAS_BUILDER/bin/$b (set FABRIC_CCAAS_BUILDER)"
  done
  command -v go >/dev/null || die "go is needed to build the chaincode"
}

ORG1="$WORK/crypto-config/peerOrganizations/org1.example.com"
ORD="$WORK/crypto-config/ordererOrganizations/example.com"

# peer_admin sets the environment of the peer CLI acting as Org1's admin.
peer_admin() {
  export FABRIC_CFG_PATH="$WORK/peercfg"
  export CORE_PEER_TLS_ENABLED=true
  export CORE_PEER_LOCALMSPID=Org1MSP
  export CORE_PEER_TLS_ROOTCERT_FILE="$ORG1/peers/peer0.org1.example.com/tls/ca.crt"
  export CORE_PEER_MSPCONFIGPATH="$ORG1/users/Admin@org1.example.com/msp"
  export CORE_PEER_ADDRESS="$PEER"
}

wait_port() { # host:port, what
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && exec 3>&- && return 0
    sleep 0.2
  done
  die "$2 did not start listening on $1 (see $WORK/logs)"
}

start() { # name, command…
  local name="$1"; shift
  nohup "$@" >"$WORK/logs/$name.log" 2>&1 &
  echo "$!" >"$WORK/pids/$name"
}

port_free() { ! (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }

up() {
  check_prereqs
  [ -d "$WORK/pids" ] && [ -n "$(ls -A "$WORK/pids" 2>/dev/null)" ] && die "a network already runs from $WORK; run '$0 down' first"
  for p in "$ORDERER" "$ORDERER_ADMIN" "$PEER" 127.0.0.1:7052 127.0.0.1:9443 127.0.0.1:9444 "$CC_ADDR"; do
    port_free "$p" || die "$p is already in use (another Fabric network? stop it first)"
  done
  # Whatever fails from here on, leave no process behind.
  trap 'log "up failed; stopping what was started"; down' ERR
  export PATH="$FABRIC_BIN:$PATH"
  rm -rf "$WORK"
  mkdir -p "$WORK"/{logs,pids,peercfg,ordcfg,data}

  log "generating identities with cryptogen"
  cryptogen generate --config="$here/crypto-config.yaml" --output="$WORK/crypto-config" >/dev/null

  log "generating the channel's genesis block"
  cp "$here/configtx.yaml" "$WORK/configtx.yaml"
  FABRIC_CFG_PATH="$WORK" configtxgen -profile ChainwatchChannel -channelID "$CHANNEL" \
    -outputBlock "$WORK/$CHANNEL.block" 2>"$WORK/logs/configtxgen.log"

  # The release's config files, with the CCaaS builder pointed at where it
  # really is; everything else is overridden through the environment below.
  sed "s#/opt/hyperledger/ccaas_builder#$FABRIC_CCAAS_BUILDER#" "$FABRIC_CFG/core.yaml" >"$WORK/peercfg/core.yaml"
  cp "$FABRIC_CFG/orderer.yaml" "$WORK/ordcfg/orderer.yaml"

  log "starting the orderer on $ORDERER"
  FABRIC_CFG_PATH="$WORK/ordcfg" \
  FABRIC_LOGGING_SPEC=info \
  ORDERER_GENERAL_LISTENADDRESS=127.0.0.1 ORDERER_GENERAL_LISTENPORT=7050 \
  ORDERER_GENERAL_LOCALMSPID=OrdererMSP \
  ORDERER_GENERAL_LOCALMSPDIR="$ORD/orderers/orderer.example.com/msp" \
  ORDERER_GENERAL_TLS_ENABLED=true \
  ORDERER_GENERAL_TLS_PRIVATEKEY="$ORD/orderers/orderer.example.com/tls/server.key" \
  ORDERER_GENERAL_TLS_CERTIFICATE="$ORD/orderers/orderer.example.com/tls/server.crt" \
  ORDERER_GENERAL_TLS_ROOTCAS="$ORD/orderers/orderer.example.com/tls/ca.crt" \
  ORDERER_GENERAL_BOOTSTRAPMETHOD=none \
  ORDERER_CHANNELPARTICIPATION_ENABLED=true \
  ORDERER_ADMIN_LISTENADDRESS="$ORDERER_ADMIN" \
  ORDERER_OPERATIONS_LISTENADDRESS=127.0.0.1:9443 \
  ORDERER_FILELEDGER_LOCATION="$WORK/data/orderer" \
  ORDERER_CONSENSUS_WALDIR="$WORK/data/orderer/etcdraft/wal" \
  ORDERER_CONSENSUS_SNAPDIR="$WORK/data/orderer/etcdraft/snap" \
  start orderer orderer
  wait_port "$ORDERER_ADMIN" orderer

  log "joining the orderer to channel $CHANNEL"
  osnadmin channel join --channelID "$CHANNEL" --config-block "$WORK/$CHANNEL.block" -o "$ORDERER_ADMIN" >"$WORK/logs/osnadmin.log"

  log "starting the peer on $PEER"
  FABRIC_CFG_PATH="$WORK/peercfg" \
  FABRIC_LOGGING_SPEC=info \
  CORE_PEER_ID=peer0.org1.example.com \
  CORE_PEER_ADDRESS="$PEER" CORE_PEER_LISTENADDRESS="$PEER" \
  CORE_PEER_CHAINCODEADDRESS=127.0.0.1:7052 CORE_PEER_CHAINCODELISTENADDRESS=127.0.0.1:7052 \
  CORE_PEER_GOSSIP_BOOTSTRAP="$PEER" CORE_PEER_GOSSIP_EXTERNALENDPOINT="$PEER" \
  CORE_PEER_LOCALMSPID=Org1MSP \
  CORE_PEER_MSPCONFIGPATH="$ORG1/peers/peer0.org1.example.com/msp" \
  CORE_PEER_TLS_ENABLED=true \
  CORE_PEER_TLS_CERT_FILE="$ORG1/peers/peer0.org1.example.com/tls/server.crt" \
  CORE_PEER_TLS_KEY_FILE="$ORG1/peers/peer0.org1.example.com/tls/server.key" \
  CORE_PEER_TLS_ROOTCERT_FILE="$ORG1/peers/peer0.org1.example.com/tls/ca.crt" \
  CORE_OPERATIONS_LISTENADDRESS=127.0.0.1:9444 \
  CORE_PEER_FILESYSTEMPATH="$WORK/data/peer" \
  CORE_LEDGER_SNAPSHOTS_ROOTDIR="$WORK/data/peer/snapshots" \
  start peer peer node start
  wait_port "$PEER" peer

  peer_admin
  log "joining the peer to channel $CHANNEL"
  for _ in $(seq 1 30); do
    peer channel join -b "$WORK/$CHANNEL.block" >"$WORK/logs/join.log" 2>&1 && break
    sleep 1
  done
  grep -q "Successfully submitted proposal to join channel" "$WORK/logs/join.log" || die "peer could not join $CHANNEL (see $WORK/logs/join.log)"

  log "packaging the chaincode for chaincode-as-a-service"
  mkdir -p "$WORK/ccpkg/src"
  printf '{"address":"%s","dial_timeout":"10s","tls_required":false}\n' "$CC_ADDR" >"$WORK/ccpkg/src/connection.json"
  printf '{"type":"ccaas","label":"%s"}\n' "$CC_LABEL" >"$WORK/ccpkg/metadata.json"
  tar -C "$WORK/ccpkg/src" -czf "$WORK/ccpkg/code.tar.gz" connection.json
  tar -C "$WORK/ccpkg" -czf "$WORK/$CC_NAME.tar.gz" metadata.json code.tar.gz

  log "installing the chaincode package"
  peer lifecycle chaincode install "$WORK/$CC_NAME.tar.gz" >"$WORK/logs/install.log" 2>&1 || die "install failed (see $WORK/logs/install.log)"
  PACKAGE_ID="$(peer lifecycle chaincode calculatepackageid "$WORK/$CC_NAME.tar.gz")"

  log "building and starting the chaincode service on $CC_ADDR ($PACKAGE_ID)"
  (cd "$repo/ledgerclient/fabric/chaincode" && go build -o "$WORK/chainwatch-chaincode" .)
  # Plain gRPC on loopback, as connection.json tells the peer; the admin
  # environment above must not switch the chaincode server to TLS.
  CHAINCODE_SERVER_ADDRESS="$CC_ADDR" CORE_CHAINCODE_ID_NAME="$PACKAGE_ID" CORE_PEER_TLS_ENABLED=false \
    start chaincode "$WORK/chainwatch-chaincode"
  wait_port "$CC_ADDR" chaincode

  log "approving and committing the chaincode definition"
  local tls=(--tls --cafile "$ORD/orderers/orderer.example.com/tls/ca.crt")
  peer lifecycle chaincode approveformyorg -o "$ORDERER" "${tls[@]}" --channelID "$CHANNEL" --name "$CC_NAME" \
    --version 1.0 --package-id "$PACKAGE_ID" --sequence 1 >"$WORK/logs/approve.log" 2>&1 || die "approve failed (see $WORK/logs/approve.log)"
  peer lifecycle chaincode commit -o "$ORDERER" "${tls[@]}" --channelID "$CHANNEL" --name "$CC_NAME" \
    --version 1.0 --sequence 1 --peerAddresses "$PEER" --tlsRootCertFiles "$CORE_PEER_TLS_ROOTCERT_FILE" \
    >"$WORK/logs/commit.log" 2>&1 || die "commit failed (see $WORK/logs/commit.log)"
  for _ in $(seq 1 30); do
    peer lifecycle chaincode querycommitted --channelID "$CHANNEL" --name "$CC_NAME" >/dev/null 2>&1 && break
    sleep 1
  done

  log "giving User1 the chainwatch service role"
  local user="Org1MSP::User1@org1.example.com"
  peer chaincode invoke -o "$ORDERER" "${tls[@]}" -C "$CHANNEL" -n "$CC_NAME" \
    --peerAddresses "$PEER" --tlsRootCertFiles "$CORE_PEER_TLS_ROOTCERT_FILE" --waitForEvent \
    -c "{\"function\":\"AssignRole\",\"Args\":[\"$user\",\"service\"]}" >"$WORK/logs/assignrole.log" 2>&1 \
    || die "role assignment failed (see $WORK/logs/assignrole.log)"

  write_client_config
  trap - ERR
  log "network up: channel $CHANNEL, chaincode $CC_NAME; client configuration in $WORK/client"
}

# write_client_config leaves what a Fabric client of chainwatch needs: the
# peer's endpoint and TLS root, and the service identity's certificate and key.
write_client_config() {
  local c="$WORK/client"
  mkdir -p "$c"
  cp "$ORG1/peers/peer0.org1.example.com/tls/ca.crt" "$c/peer-tls-ca.crt"
  cp "$ORG1/users/User1@org1.example.com/msp/signcerts/"*.pem "$c/service-cert.pem"
  cp "$ORG1/users/User1@org1.example.com/msp/keystore/"* "$c/service-key.pem"
  cp "$ORG1/users/Admin@org1.example.com/msp/signcerts/"*.pem "$c/admin-cert.pem"
  cp "$ORG1/users/Admin@org1.example.com/msp/keystore/"* "$c/admin-key.pem"
  cat >"$c/chainwatch-fabric.yaml" <<YAML
# chainwatch's view of the network network.sh started (ledger.fabric keys).
channel: $CHANNEL
chaincode: $CC_NAME
msp_id: Org1MSP
peer_endpoint: $PEER
peer_host_override: peer0.org1.example.com
peer_tls_ca: $c/peer-tls-ca.crt
cert: $c/service-cert.pem
key: $c/service-key.pem
YAML
}

down() {
  if [ -d "$WORK/pids" ]; then
    for f in "$WORK"/pids/*; do
      [ -e "$f" ] || continue
      kill "$(cat "$f")" 2>/dev/null || true
      rm -f "$f"
    done
    sleep 1
  fi
  log "network stopped; state left in $WORK (remove it to start afresh)"
}

status() {
  for f in "$WORK"/pids/*; do
    [ -e "$f" ] || { echo "no network from $WORK"; return 1; }
    if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$(basename "$f") running (pid $(cat "$f"))"; else echo "$(basename "$f") DEAD"; fi
  done
}

case "${1:-}" in
  up) IN_UP=1 up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: FABRIC_BIN=… $0 up|down|status" >&2; exit 2 ;;
esac
