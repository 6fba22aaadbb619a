package iforest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// encodingVersion is bumped whenever the binary layout below changes.
const encodingVersion = 1

// MarshalBinary encodes the forest in a stable little-endian layout:
//
//	u32 version, u32 dims, u32 ψ, u32 extension,
//	u32 trees, u32 nodes, u32 normals,
//	dims × f64 training mean,
//	trees × u32 root,
//	nodes × (f64 value, i32 feature, i32 left),
//	normals × f64
func (f *Forest) MarshalBinary() ([]byte, error) {
	size := 7*4 + f.dims*8 + len(f.roots)*4 + len(f.nodes)*16 + len(f.normals)*8
	b := make([]byte, 0, size)
	for _, v := range []int{encodingVersion, f.dims, f.psi, f.extension, len(f.roots), len(f.nodes), len(f.normals)} {
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	for _, m := range f.center {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(m))
	}
	for _, r := range f.roots {
		b = binary.LittleEndian.AppendUint32(b, uint32(r))
	}
	for _, nd := range f.nodes {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(nd.value))
		b = binary.LittleEndian.AppendUint32(b, uint32(nd.feature))
		b = binary.LittleEndian.AppendUint32(b, uint32(nd.left))
	}
	for _, w := range f.normals {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(w))
	}
	return b, nil
}

var errTruncated = errors.New("iforest: encoded forest is truncated")

// UnmarshalBinary decodes a forest written by MarshalBinary. It checks every
// index, so a damaged or foreign encoding is refused rather than allowed to
// loop or index out of range while scoring.
func (f *Forest) UnmarshalBinary(b []byte) error {
	u32 := func() (uint32, error) {
		if len(b) < 4 {
			return 0, errTruncated
		}
		v := binary.LittleEndian.Uint32(b)
		b = b[4:]
		return v, nil
	}
	var hdr [7]uint32
	for i := range hdr {
		v, err := u32()
		if err != nil {
			return err
		}
		hdr[i] = v
	}
	version, dims, psi, ext, trees, nodes, normals := hdr[0], int(hdr[1]), int(hdr[2]), int(hdr[3]), int(hdr[4]), int(hdr[5]), int(hdr[6])
	if version != encodingVersion {
		return fmt.Errorf("iforest: encoding version %d, this build reads %d", version, encodingVersion)
	}
	if dims < 1 || psi < 2 || ext < 0 || ext >= dims || trees < 1 || nodes < trees {
		return fmt.Errorf("iforest: implausible header (dims %d, ψ %d, extension %d, trees %d, nodes %d)", dims, psi, ext, trees, nodes)
	}
	if want := dims*8 + trees*4 + nodes*16 + normals*8; len(b) != want {
		return fmt.Errorf("iforest: body is %d bytes, header promises %d", len(b), want)
	}
	if (ext == 0) != (normals == 0) || normals%dims != 0 {
		return fmt.Errorf("iforest: %d normal coordinates do not fit extension %d with %d features", normals, ext, dims)
	}
	g := Forest{dims: dims, psi: psi, extension: ext, cPsi: AveragePathLength(psi)}
	g.center = make([]float64, dims)
	for i := range g.center {
		g.center[i] = math.Float64frombits(binary.LittleEndian.Uint64(b))
		b = b[8:]
	}
	g.roots = make([]int32, trees)
	for i := range g.roots {
		v, _ := u32()
		g.roots[i] = int32(v)
	}
	g.nodes = make([]node, nodes)
	for i := range g.nodes {
		value := math.Float64frombits(binary.LittleEndian.Uint64(b))
		feature := int32(binary.LittleEndian.Uint32(b[8:]))
		left := int32(binary.LittleEndian.Uint32(b[12:]))
		b = b[16:]
		g.nodes[i] = node{value: value, feature: feature, left: left}
		if feature == leafFeature {
			continue
		}
		// Children always follow their parent, which rules out cycles.
		limit := int32(dims)
		if ext > 0 {
			limit = int32(normals / dims)
		}
		if feature < 0 || feature >= limit || left <= int32(i) || int(left)+1 >= nodes {
			return fmt.Errorf("iforest: node %d has feature %d and children %d,%d out of range", i, feature, left, left+1)
		}
	}
	for _, r := range g.roots {
		if r < 0 || int(r) >= nodes {
			return fmt.Errorf("iforest: tree root %d out of range", r)
		}
	}
	if normals > 0 {
		g.normals = make([]float64, normals)
		for i := range g.normals {
			g.normals[i] = math.Float64frombits(binary.LittleEndian.Uint64(b))
			b = b[8:]
		}
	}
	g.prepare()
	*f = g
	return nil
}
