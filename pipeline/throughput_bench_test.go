package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/google/pprof/profile"
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
	// "rare-alerts" sets a budget of 0.01 false incidents per 1,000
	// device-hours to measure the pipeline's capacity; "default-budget"
	// keeps the default of 1.
	for _, c := range []struct {
		name   string
		budget float64
	}{{"rare-alerts", 0.01}, {"default-budget", 0}} {
		b.Run(c.name, func(b *testing.B) { benchmarkEndToEnd(b, c.name, c.budget) })
	}
}

func benchmarkEndToEnd(b *testing.B, name string, budget float64) {
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
		Detector: pipeline.DetectorConfig{Warmup: 10 * time.Minute, FalseAlertsPer1000DeviceHours: budget}}, env.as(contract.RoleService), reg, testLoggerB(b))
	b.ResetTimer()
	var prof bytes.Buffer
	profiling := pprof.StartCPUProfile(&prof) == nil // not when go test -cpuprofile is on
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
	if profiling {
		pprof.StopCPUProfile()
		if path := os.Getenv("CHAINWATCH_BENCH_PROFILE"); path != "" {
			if err := os.WriteFile(path+"."+name, prof.Bytes(), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		reportCPUShares(b, &prof, records)
	}
	_ = svc.Shutdown(context.Background())
	b.ReportMetric(float64(records)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(s.WindowsScored.Load()), "windows-scored")
	p99, n := histogramQuantile(b, reg, "chainwatch_stage_latency_seconds", "window_close_to_alert", 0.99)
	b.ReportMetric(p99*1000, "p99-close-to-alert-ms")
	b.ReportMetric(float64(n), "alerts")
}

// reportCPUShares reports the anchoring stage's share of the CPU the
// service used while the benchmark ran, from a CPU profile's samples:
// those of the embedded broker (label component=broker) are not the
// service's; runtime work without a label (GC workers, timers) is. It also
// reports the share among the stages alone.
func reportCPUShares(b *testing.B, raw *bytes.Buffer, records int) {
	p, err := profile.Parse(raw)
	if err != nil {
		b.Fatal(err)
	}
	cpu := len(p.SampleType) - 1 // the nanoseconds column
	var total, broker, stages, anchoring float64
	for _, smp := range p.Sample {
		v := float64(smp.Value[cpu])
		total += v
		switch {
		case len(smp.Label["component"]) > 0 && smp.Label["component"][0] == "broker":
			broker += v
		case len(smp.Label["stage"]) > 0:
			stages += v
			if smp.Label["stage"][0] == "anchoring" {
				anchoring += v
			}
		}
	}
	if total-broker <= 0 || stages <= 0 {
		return
	}
	b.ReportMetric(anchoring/float64(records), "anchoring-cpu-ns/record")
	b.ReportMetric(100*anchoring/(total-broker), "anchoring-%-service-cpu")
	b.ReportMetric(100*anchoring/stages, "anchoring-%-stage-cpu")
	b.ReportMetric(100*broker/total, "broker-%-process-cpu")
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
