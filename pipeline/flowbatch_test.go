package pipeline

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chainwatch/chainwatch/pipeline/decode"
)

// TestFlowBatchDecodesInOrder decodes a batch large enough to be split over
// goroutines and checks every record, malformed ones included, against
// decode.Flow on its own, in the batch's order.
func TestFlowBatchDecodesInOrder(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	}
	const n = 5*minDecodeChunk + 37
	var b flowBatch
	for round := range 2 { // the second reuses the first's slices
		b.reset()
		for i := range n - round*100 {
			v := fmt.Appendf(nil, `{"device_id":"meter-%05d","time_ms":%d,"src_ip":"10.20.0.7","dst_ip":"52.16.0.%d","dst_port":443,"proto":"tcp","bytes_out":%d,"bytes_in":410,"packets_out":1,"packets_in":1}`,
				i, 1_700_000_000_000+int64(i)*10, i%250, 800+i)
			if i%97 == 0 {
				v = []byte(`{"device_id":"meter-1","time_ms":`) // cut short
			}
			_ = b.add(&kgo.Record{Value: v, Offset: int64(i)})
		}
		b.decode()
		if len(b.flows) != len(b.records) || len(b.errs) != len(b.records) {
			t.Fatalf("%d records, %d flows, %d errors", len(b.records), len(b.flows), len(b.errs))
		}
		for i, r := range b.records {
			var want decode.FlowRecord
			wantErr := decode.Flow(r.Value, &want)
			if (wantErr == nil) != (b.errs[i] == nil) {
				t.Fatalf("record %d: error %v, decoded alone %v", i, b.errs[i], wantErr)
			}
			if wantErr == nil && fmt.Sprint(b.flows[i]) != fmt.Sprint(want) {
				t.Fatalf("record %d: %+v, decoded alone %+v", i, b.flows[i], want)
			}
		}
	}
}
