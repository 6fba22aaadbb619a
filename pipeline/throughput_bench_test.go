package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
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
// this machine's cores, ten of them scanning over the second half. It
// reports records/s of the detection stage against two bare consumers of
// the same records (each the median of three reads), and then, with three
// more minutes of traffic produced live in which ten other devices begin
// to scan, the p99 latency from a window's close to its alert in the
// outbox.
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
	// records of backlog; liveRecords (three minutes of event time) once
	// the service has caught up; scanners devices scanning in each.
	const records, liveRecords, devices, scanners = 500_000, 18_000, 2000, 10
	const warmup = 10 * time.Minute
	// judged is how many windows the backlog's records close past the
	// warm-up: a record every 10 ms of event time.
	judged := int64(devices) * int64((records*10*time.Millisecond)/time.Minute-warmup/time.Minute)
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
	defer w.Close()
	base := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC).UnixMilli()
	// produce writes records [from, to) of one stream: every device a flow
	// every 20 s of event time to one of five cloud hosts, except the
	// devices in [scanFrom, scanTo) from record scanStart on, which scan:
	// every flow to another internal host and port.
	produce := func(from, to, scanStart, scanFrom, scanTo int) {
		batch := make([]kafka.Message, 0, 10_000)
		for i := from; i < to; i++ {
			d := i % devices
			dev := fmt.Sprintf("meter-%05d", d)
			dst, port := fmt.Sprintf("52.16.0.%d", i%5), 443
			if d >= scanFrom && d < scanTo && i >= scanStart {
				dst, port = fmt.Sprintf("10.30.%d.%d", i/devices%250, d+1), 1024+i/devices%60000
			}
			batch = append(batch, kafka.Message{Key: []byte(dev), Value: fmt.Appendf(nil,
				`{"device_id":%q,"time_ms":%d,"src_ip":"10.20.0.7","dst_ip":%q,"dst_port":%d,"proto":"tcp","bytes_out":%d,"bytes_in":410,"packets_out":1,"packets_in":1,"tcp_flags":27}`,
				dev, base+int64(i)*10, dst, port, 800+i%200)})
			if len(batch) == cap(batch) || i == to-1 {
				if err := w.WriteMessages(ctx, batch...); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
	}
	// The backlog the service starts on; the first few devices scan over
	// its second half.
	produce(0, records, records/2, 0, scanners)

	// Baselines of the same run, reading the same records from the same
	// broker: kcat (Debian's standalone consumer, each record written out
	// as a consumer process does) and, as the ceiling of what the broker
	// serves, franz-go fetching in-process with the service's own fetch
	// settings and touching no record.
	var kcatRate float64
	if kcat, err := exec.LookPath("kcat"); err != nil {
		b.Log("kcat not installed (apt-get install kcat): no kcat baseline")
	} else {
		kcatRate = medianOf(baselineReads, func() float64 { return kcatReadRate(b, kcat, env.brokers[0], env.topics.Flows, records) })
	}
	fetchRate := medianOf(baselineReads, func() float64 { return bareReadRate(b, ctx, env.brokers, env.topics.Flows, records) })

	reg := prometheus.NewRegistry()
	svc := pipeline.NewService(pipeline.ServiceConfig{Kafka: env.kafka, ModelDir: filepath.Join(env.dir, "models"), OutboxPath: filepath.Join(env.dir, "outbox.db"),
		Detector: pipeline.DetectorConfig{Warmup: warmup, FalseAlertsPer1000DeviceHours: budget}}, env.as(contract.RoleService), reg, testLoggerB(b))
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
	// Records are counted as a poll reads them, before their windows
	// close and are held for the first model, so the run is done once
	// every record is read, windows have been held and none is any more,
	// and no window has been judged for a second; its time is that of the
	// last window judged. (judged windows are expected: every device's
	// every whole minute past the warm-up; a partition's last minute can
	// wait for a later record, and the shortfall is logged.)
	var lastScored int64
	lastChange, sawHeld := time.Now(), false
	for ctx.Err() == nil {
		held, scored := s.WindowsHeld.Load(), s.WindowsScored.Load()
		sawHeld = sawHeld || held > 0
		if scored != lastScored {
			lastScored, lastChange = scored, time.Now()
		}
		if s.RecordsConsumed.Load() >= records && sawHeld && held == 0 && scored > 0 && time.Since(lastChange) > time.Second {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ctx.Err() != nil {
		b.Fatalf("not done in time: %d records read, %d windows judged, %d held", s.RecordsConsumed.Load(), lastScored, s.WindowsHeld.Load())
	}
	elapsed := lastChange.Sub(start)
	if lastScored < judged {
		b.Logf("%d of %d windows judged when the run ended", lastScored, judged)
	}
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
	// Live: the backlog's windows past the warm-up were held for the
	// first model and judged when it trained, long after they closed, so
	// they say nothing of alert latency. Three more minutes of traffic are
	// produced now, with other devices starting a scan, and the latency
	// is that of the live windows' alerts.
	_, backlogAlerts := latencyBuckets(b, reg, "window_close_to_alert")
	produce(records, records+liveRecords, records, scanners, 2*scanners)
	for s.RecordsConsumed.Load() < records+liveRecords && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	var p99 float64
	var live uint64
	for deadline := time.Now().Add(30 * time.Second); live < scanners && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		bounds, counts := latencyBuckets(b, reg, "window_close_to_alert")
		p99, live = quantileSince(bounds, counts, backlogAlerts, 0.99)
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
	b.ReportMetric(float64(lastScored), "windows-scored")
	b.ReportMetric(p99*1000, "p99-close-to-alert-ms")
	b.ReportMetric(float64(live), "live-alerts")
	b.ReportMetric(float64(s.AlertsByKind()[contract.AlertBehaviour]), "alerts")
	if live < scanners {
		b.Errorf("%d live alerts from the %d devices that began scanning live: the alert latency was not measured", live, scanners)
	}
}

// baselineReads is how many times each baseline reads the records: its
// rate is the median, since one read's rate moves by up to twofold from
// run to run on a shared machine (kcat's more than the service's), and the
// ratio would follow whichever read was the odd one.
const baselineReads = 3

// medianOf returns the median of n calls of rate.
func medianOf(n int, rate func() float64) float64 {
	rates := make([]float64, n)
	for i := range rates {
		rates[i] = rate()
	}
	slices.Sort(rates)
	return rates[n/2]
}

// kcatReadRate reads a topic's first n records with the kcat at path into
// /dev/null and returns records/s.
func kcatReadRate(b *testing.B, path, broker, topic string, n int) float64 {
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

// latencyBuckets returns one stage's latency histogram: its buckets'
// upper bounds and cumulative counts (nil before its first sample).
func latencyBuckets(b *testing.B, reg *prometheus.Registry, stage string) (bounds []float64, counts []uint64) {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "chainwatch_stage_latency_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !labelIs(m, "stage", stage) {
				continue
			}
			for _, bk := range m.GetHistogram().GetBucket() {
				bounds = append(bounds, bk.GetUpperBound())
				counts = append(counts, bk.GetCumulativeCount())
			}
		}
	}
	return bounds, counts
}

// quantileSince estimates quantile q of the samples a stage's latency
// histogram took since an earlier snapshot (before; nil for all of
// them), by linear interpolation within a bucket as Prometheus's
// histogram_quantile does, and returns it with their count.
func quantileSince(bounds []float64, counts, before []uint64, q float64) (float64, uint64) {
	at := func(i int) float64 {
		if i < len(before) {
			return float64(counts[i] - before[i])
		}
		return float64(counts[i])
	}
	if len(counts) == 0 {
		return 0, 0
	}
	total := at(len(counts) - 1)
	rank := q * total
	lower, prev := 0.0, 0.0
	for i := range counts {
		if c := at(i); c >= rank {
			if c == prev {
				return bounds[i], uint64(total)
			}
			return lower + (bounds[i]-lower)*(rank-prev)/(c-prev), uint64(total)
		}
		lower, prev = bounds[i], at(i)
	}
	return lower, uint64(total)
}
