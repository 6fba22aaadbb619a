package pipeline_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
	"github.com/chainwatch/chainwatch/pipeline"
)

// BenchmarkEndToEndThroughput measures the whole service (detection,
// anchoring and telemetry stages) consuming 500,000 flow records of 2,000
// registered devices that already sit in the embedded broker, over TCP, on
// this machine's cores. It reports records/s of the detection stage.
//
//	go test ./pipeline -run '^$' -bench EndToEndThroughput -benchtime 1x
func BenchmarkEndToEndThroughput(b *testing.B) {
	// The synthetic traffic is nearly uniform, so the calibrated threshold
	// flags a few percent of windows at random. "rare-alerts" calibrates
	// for 0.01% to measure the pipeline's capacity; "default-calibration"
	// keeps 0.5% and so also measures synchronous alert delivery.
	for _, c := range []struct {
		name          string
		contamination float64
	}{{"rare-alerts", 0.0001}, {"default-calibration", 0}} {
		b.Run(c.name, func(b *testing.B) { benchmarkEndToEnd(b, c.contamination) })
	}
}

func benchmarkEndToEnd(b *testing.B, contamination float64) {
	const records, devices = 500_000, 2000
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	env := startEmbeddedDefaultB(b, 4)
	maker := env.as(contract.RoleManufacturer)
	for i := range devices {
		if _, err := maker.RegisterDevice(ctx, contract.Device{ID: fmt.Sprintf("meter-%05d", i), Profile: "meter", Owner: "acme"}); err != nil {
			b.Fatal(err)
		}
	}
	w := &kafka.Writer{Addr: kafka.TCP(env.brokers...), Topic: env.topics.Flows, Balancer: &kafka.Hash{}, BatchSize: 5000, BatchBytes: 16 << 20, BatchTimeout: time.Millisecond}
	base := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC).UnixMilli()
	batch := make([]kafka.Message, 0, 10_000)
	for i := range records {
		dev := fmt.Sprintf("meter-%05d", i%devices)
		batch = append(batch, kafka.Message{Key: []byte(dev), Value: fmt.Appendf(nil,
			`{"device_id":%q,"time_ms":%d,"src_ip":"10.20.0.7","dst_ip":"52.16.0.%d","dst_port":443,"proto":"tcp","bytes_out":%d,"bytes_in":410,"packets_out":1,"packets_in":1,"tcp_flags":27}`,
			dev, base+int64(i)*10, i%5, 800+i%200)})
		if len(batch) == cap(batch) {
			if err := w.WriteMessages(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	w.Close()

	reg := prometheus.NewRegistry()
	svc := pipeline.NewService(pipeline.ServiceConfig{Brokers: env.brokers, ModelDir: filepath.Join(env.dir, "models"), OutboxPath: filepath.Join(env.dir, "outbox.db"),
		Detector: pipeline.DetectorConfig{Warmup: 10 * time.Minute, Contamination: contamination}}, env.as(contract.RoleService), reg, testLoggerB(b))
	b.ResetTimer()
	start := time.Now()
	if err := svc.Start(ctx); err != nil {
		b.Fatal(err)
	}
	s := &svc.Metrics().Summary
	for s.RecordsConsumed.Load() < records && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	_ = svc.Shutdown(context.Background())
	b.ReportMetric(float64(records)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(s.WindowsScored.Load()), "windows-scored")
	p99, n := histogramQuantile(b, reg, "chainwatch_stage_latency_seconds", "window_close_to_alert", 0.99)
	b.ReportMetric(p99*1000, "p99-close-to-alert-ms")
	b.ReportMetric(float64(n), "alerts")
}

// histogramQuantile estimates a quantile of one stage's latency histogram
// by linear interpolation within its bucket, as Prometheus's
// histogram_quantile does, and returns it with the sample count.
func histogramQuantile(b *testing.B, reg *prometheus.Registry, name, stage string, q float64) (float64, uint64) {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !labelIs(m, "stage", stage) {
				continue
			}
			h := m.GetHistogram()
			total := h.GetSampleCount()
			rank := q * float64(total)
			lower, prevCount := 0.0, 0.0
			for _, bk := range h.GetBucket() {
				if c := float64(bk.GetCumulativeCount()); c >= rank {
					if c == prevCount {
						return bk.GetUpperBound(), total
					}
					return lower + (bk.GetUpperBound()-lower)*(rank-prevCount)/(c-prevCount), total
				}
				lower, prevCount = bk.GetUpperBound(), float64(bk.GetCumulativeCount())
			}
			return lower, total
		}
	}
	return 0, 0
}
