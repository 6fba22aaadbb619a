// Package ledgerclient is chainwatch's only way onto a ledger. Client gives
// typed calls to the contract (ledgerclient/contract) over any Backend: the
// embedded ledger (ledgerclient/embedded, the default) or a Hyperledger
// Fabric network. Callers never know which one they talk to.
package ledgerclient
