// Package contract is chainwatch's ledger contract: device birth
// certificates, approved firmware, anchoring seals (and the batch anchors
// of ledgers written before seals), alerts with analyst
// verdicts and model registrations, with the role checks and validation that
// guard them.
//
// The logic is written once, over the small State interface, and runs in two
// places: in-process in the embedded ledger (ledgerclient/embedded) and as
// Fabric chaincode (ledgerclient/fabric/chaincode), whose shim state
// satisfies the same interface. Every function is reachable through Invoke by
// name with JSON arguments, so both hosts dispatch identically.
package contract
