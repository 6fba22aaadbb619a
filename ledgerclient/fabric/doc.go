// Package fabric reaches chainwatch's contract on a Hyperledger Fabric
// network (the chaincode in ledgerclient/fabric/chaincode) and satisfies
// ledgerclient.Backend, so the pipeline and the CLI use Fabric exactly as
// they use the embedded ledger.
//
// It is built on github.com/hyperledger/fabric-gateway, Fabric's maintained
// client. The design first chose fabric-sdk-go; against Fabric v2.5 with
// today's Go, v1.0.0 fails to load any channel MSP whose CA certificate has
// a high-S ECDSA signature — its vendored MSP verifies the original root
// against a pool holding the root's low-S re-signed copy, which
// crypto/x509 refuses as a parent with the subject and key of a certificate
// already in the chain — and then finds no endorsers. Fabric v2.5 fixed the
// same code (msp/mspimpl.go, sanitizeCert); fabric-sdk-go has had no release
// since. deploy/fabric/README.md has the evidence.
package fabric
