// Package features turns one device's flows in one time window into the
// behaviour vector the isolation forests score. It owns the feature schema:
// the names, their order and how each is computed. Everything here is a pure
// function of the flows and of the device's destination history, so a replay
// of the same records yields the same vectors.
package features
