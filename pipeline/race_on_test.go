//go:build race

package pipeline_test

// raceDetector reports whether the race detector instruments this build.
const raceDetector = true
