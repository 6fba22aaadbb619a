// Package models owns trained anomaly models as artifacts: training a forest
// on a feature matrix, calibrating its alert threshold and confidence bands,
// explaining a score against the training baseline, and the versioned,
// self-describing file format whose SHA-256 is the model's identity on the
// ledger.
//
// The algorithm lives in models/iforest, the feature schema in
// models/features and the evaluation metrics in models/eval.
package models
