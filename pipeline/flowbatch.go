package pipeline

import (
	"runtime"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chainwatch/chainwatch/pipeline/decode"
)

// flowBatch holds a poll's flow records in the order the detect stage takes
// them, decoded ahead on every core. Decoding needs nothing but the record
// and is about a fifth of the stage's work per record; everything after it
// (identity, windows, scoring, incidents) depends on the records before,
// so it stays on the stage's one goroutine and in order.
type flowBatch struct {
	records []*kgo.Record
	flows   []decode.FlowRecord
	errs    []error
}

// minDecodeChunk is the fewest records a decoding goroutine is started
// for: below it the goroutine costs more than it saves.
const minDecodeChunk = 512

func (b *flowBatch) reset() { b.records = b.records[:0] }

func (b *flowBatch) add(r *kgo.Record) error {
	b.records = append(b.records, r)
	return nil
}

// decode decodes every record of the batch, over up to GOMAXPROCS
// goroutines each taking a contiguous run.
func (b *flowBatch) decode() {
	n := len(b.records)
	if cap(b.flows) < n {
		b.flows, b.errs = make([]decode.FlowRecord, n), make([]error, n)
	}
	b.flows, b.errs = b.flows[:n], b.errs[:n]
	workers := min(runtime.GOMAXPROCS(0), n/minDecodeChunk)
	if workers <= 1 {
		b.decodeRange(0, n)
		return
	}
	chunk := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += chunk {
		wg.Go(func() { b.decodeRange(lo, min(lo+chunk, n)) })
	}
	wg.Wait()
}

func (b *flowBatch) decodeRange(lo, hi int) {
	for i := lo; i < hi; i++ {
		b.flows[i] = decode.FlowRecord{}
		b.errs[i] = decode.Flow(b.records[i].Value, &b.flows[i])
	}
}
