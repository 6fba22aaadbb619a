// Package integrity proves Kafka history untampered against the anchors on
// the ledger. It owns the maths and the reading; the stages that run it
// (package pipeline's AnchorStage, which writes anchors, and AuditStage,
// which re-verifies them round after round) reach it only through this
// package's API: LeafHasher and MerkleRoot to build a batch's root, a
// LeafTopic to keep its leaf hashes and the batch index, NewSeal to seal a
// period's batches, Anchors to list them, Replay to verify ranges, and a
// HistoryVerifier for the detector to train only on verified history.
//
//   - merkle.go: RFC 6962 Merkle trees over record leaves (offset,
//     timestamp, key, value), inclusion proofs and their check;
//   - stream.go: a topic's identity on the ledger, topic@<KIP-516 id>, so
//     that a topic deleted and created again is a new stream; anchors
//     written before streams carried ids are still listed (Anchors.List);
//   - seal.go: a period's seal, one root on the ledger over the
//     descriptors of every batch cut in the period (BatchLeaf, NewSeal);
//   - sealindex.go: the batch index, each seal's descriptors kept in the
//     leaf topic and let go of once they have all expired;
//   - anchors.go: what is anchored (Anchors.List, Get), sealed batches
//     believed only where the index hashes to their seal on the ledger,
//     and batches anchored one by one before seals;
//   - replay.go: re-reads a partition and judges every anchored range
//     verified, mismatched, unanchored or expired (retention removed it);
//   - leaftopic.go: the compacted topic of every anchored batch's leaf
//     hashes, with which the surviving records of a range retention cut
//     through are still verified and proven;
//   - prove.go: one record's inclusion proof to its anchored root, checked
//     offline by anyone with the anchor (chainwatch verify-proof);
//   - verified.go: which warm-up ranges verify, for training.
package integrity
