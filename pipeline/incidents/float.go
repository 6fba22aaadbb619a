package incidents

import "math"

func uint32FromFloat(f float32) uint32 { return math.Float32bits(f) }

func float32FromUint(u uint32) float32 { return math.Float32frombits(u) }
