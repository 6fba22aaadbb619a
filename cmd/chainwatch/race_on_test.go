//go:build race

package main

// raceDetector reports whether the race detector instruments this build.
const raceDetector = true
