// Package simulator is a deterministic simulated IoT fleet: meters,
// cameras, PLCs and gateways with diurnal traffic to their usual peers, and
// attack scenarios (DDoS participation, exfiltration, port scan, C2
// beaconing, lateral movement) injected on a schedule and written to a
// ground-truth CSV so that detection can be scored. It produces the native
// JSON flow schema to Kafka through kafka-go, like any real collector, and
// registers its fleet's birth certificates on the ledger as a manufacturer
// and operator would.
package simulator
