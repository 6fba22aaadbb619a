package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

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

	// Baselines of the same run, reading the same records from the same
	// broker: kcat (Debian's standalone consumer, each record written out
	// as a consumer process does) and, as the ceiling of what the broker
	// serves, franz-go fetching in-process with the service's own fetch
	// settings and touching no record.
	kcatRate := kcatReadRate(b, env.brokers[0], env.topics.Flows, records)
	fetchRate := bareReadRate(b, ctx, env.brokers, env.topics.Flows, records)

	reg := prometheus.NewRegistry()
	svc := pipeline.NewService(pipeline.ServiceConfig{Kafka: env.kafka, ModelDir: filepath.Join(env.dir, "models"), OutboxPath: filepath.Join(env.dir, "outbox.db"),
		Detector: pipeline.DetectorConfig{Warmup: 10 * time.Minute, FalseAlertsPer1000DeviceHours: budget}}, env.as(contract.RoleService), reg, testLoggerB(b))
	b.ResetTimer()
	var prof bytes.Buffer
	profiling := pprof.StartCPUProfile(&prof) == nil // not when go test -cpuprofile is on
	start := time.Now()
	if err := svc.Start(ctx); err != nil {
		b.Fatal(err)
	}
	s := &svc.Metrics().Summary
	// Every record read and every window judged: windows held while the
	// first model's warm-up history is verified count as not done yet.
	for (s.RecordsConsumed.Load() < records || s.WindowsHeld.Load() > 0 || s.WindowsScored.Load() == 0) && ctx.Err() == nil {
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
	rate := float64(records) / elapsed.Seconds()
	b.ReportMetric(rate, "records/s")
	if kcatRate > 0 {
		b.ReportMetric(kcatRate, "kcat-records/s")
		b.ReportMetric(rate/kcatRate, "ratio-to-kcat")
	}
	b.ReportMetric(fetchRate, "fetch-only-records/s")
	b.ReportMetric(rate/fetchRate, "ratio-to-fetch-only")
	b.ReportMetric(float64(s.WindowsScored.Load()), "windows-scored")
	p99, n := histogramQuantile(b, reg, "chainwatch_stage_latency_seconds", "window_close_to_alert", 0.99)
	b.ReportMetric(p99*1000, "p99-close-to-alert-ms")
	b.ReportMetric(float64(n), "alerts")
}

// kcatReadRate reads a topic's first n records with kcat into /dev/null and
// returns records/s, or 0 (and says so) when kcat is not installed.
func kcatReadRate(b *testing.B, broker, topic string, n int) float64 {
	path, err := exec.LookPath("kcat")
	if err != nil {
		b.Log("kcat not installed (apt-get install kcat): no kcat baseline")
		return 0
	}
	cmd := exec.Command(path, "-C", "-b", broker, "-t", topic, "-o", "beginning", "-e", "-q", "-c", strconv.Itoa(n), "-f", "%s\n")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil && len(out) > 0 && !bytes.Contains(out, []byte("{")) {
		b.Fatalf("kcat: %v: %s", err, out)
	}
	return float64(n) / time.Since(start).Seconds()
}

// bareReadRate reads a topic's first n records in-process with franz-go
// (no group, the service's fetch sizes, nothing done per record) and
// returns records/s: the ceiling of what the broker serves.
func bareReadRate(b *testing.B, ctx context.Context, brokers []string, topic string, n int) float64 {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(16<<20))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	start := time.Now()
	got := 0
	for got < n && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		if errs := fs.Errors(); len(errs) > 0 {
			b.Fatal(errs[0].Err)
		}
		got += fs.NumRecords()
	}
	return float64(got) / time.Since(start).Seconds()
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
