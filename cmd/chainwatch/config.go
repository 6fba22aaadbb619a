package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/chainwatch/chainwatch/ledgerclient/fabric"
	"github.com/chainwatch/chainwatch/pipeline"
	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
	"github.com/chainwatch/chainwatch/pipeline/secret"
	"github.com/chainwatch/chainwatch/pipeline/sinks"
)

// Config is chainwatch's one configuration file. Every key can be
// overridden by an environment variable named CHAINWATCH_ followed by the
// key's path in upper case with dots as underscores, e.g. kafka.brokers →
// CHAINWATCH_KAFKA_BROKERS (lists are comma-separated). Zero values mean
// the documented defaults, which `chainwatch config print` shows.
type Config struct {
	// DataDir holds all local state: the embedded broker's log, the
	// embedded ledger, model artifacts and the simulator's ground truth.
	DataDir  string `yaml:"data_dir"`
	LogLevel string `yaml:"log_level"` // debug, info, warn, error

	Kafka     KafkaConfig             `yaml:"kafka"`
	Topics    pipeline.Topics         `yaml:"topics"`
	Window    pipeline.WindowConfig   `yaml:"window"`
	Detector  pipeline.DetectorConfig `yaml:"detector"`
	Retrain   pipeline.RetrainConfig  `yaml:"retrain"`
	Anchor    AnchorConfig            `yaml:"anchor"`
	Audit     AuditConfig             `yaml:"audit"`
	Alerts    AlertsConfig            `yaml:"alerts"`
	Ledger    LedgerConfig            `yaml:"ledger"`
	HTTP      HTTPConfig              `yaml:"http"`
	Simulator SimulatorConfig         `yaml:"simulator"`
	Profiling ProfilingConfig         `yaml:"profiling"`
}

// KafkaConfig selects the cluster.
type KafkaConfig struct {
	// Brokers of a real cluster. Empty starts the embedded broker.
	Brokers []string `yaml:"brokers"`
	// EmbeddedListen is the embedded broker's address. Default 127.0.0.1:9092.
	EmbeddedListen string `yaml:"embedded_listen"`
	// EmbeddedRetentionBytes bounds each partition of the embedded broker,
	// oldest records deleted first (Kafka's log.retention.bytes): the
	// broker keeps its log in memory. Default 32 MiB; negative keeps
	// everything.
	EmbeddedRetentionBytes int64 `yaml:"embedded_retention_bytes"`
	// Partitions and Replication apply to topics chainwatch creates.
	// Defaults 4 and 1.
	Partitions  int `yaml:"partitions"`
	Replication int `yaml:"replication"`
	// GroupID of the detection stage. Default chainwatch-detect.
	GroupID string `yaml:"group_id"`
	// AnchorGroupID of the anchoring stage. Default chainwatch-anchor.
	AnchorGroupID string `yaml:"anchor_group_id"`
	// TLS and SASL secure every connection to kafka.brokers, of both
	// Kafka clients in the binary (see package kafkaconn). Off by default;
	// the embedded broker is plaintext on loopback and takes neither.
	TLS  kafkaconn.TLS  `yaml:"tls"`
	SASL kafkaconn.SASL `yaml:"sasl"`
}

// cluster resolves the connection settings for brokers: the files named
// by kafka.tls are loaded and the SASL password is read. Errors name the
// key at fault.
func (k KafkaConfig) cluster(brokers []string, environ []string) (*kafkaconn.Cluster, error) {
	c, err := kafkaconn.Config{Brokers: brokers, TLS: k.TLS, SASL: k.SASL}.Open(environ)
	if err != nil {
		return nil, fmt.Errorf("kafka.%w", err)
	}
	return c, nil
}

// AlertsConfig sends alerts to the SOC's tools and takes verdicts back.
type AlertsConfig struct {
	// Webhooks are remote sinks, each behind its own durable queue
	// (pipeline/sinks): json (HMAC-signed), splunk-hec, ecs,
	// cef-syslog, alertmanager.
	Webhooks []sinks.WebhookConfig `yaml:"webhooks"`
	// LinkTemplate is a text/template over the alert that every format
	// carries as the alert's link, e.g.
	// https://grafana.example/d/chainwatch-device?var-device={{.DeviceID}}.
	// Empty: no link.
	LinkTemplate string `yaml:"link_template"`
	// QueueCapacity is how many alerts one sink's queue holds before the
	// pipeline is held back. Default 10000.
	QueueCapacity int `yaml:"queue_capacity"`
	// MaxBackoff caps the wait between retries of a failing sink.
	// Default 30s.
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// API is the alerts API on the operations listener.
	API AlertsAPIConfig `yaml:"api"`
}

// AlertsAPIConfig authenticates the alerts API (GET /api/v1/alerts, POST
// /api/v1/alerts/{id}/verdict).
type AlertsAPIConfig struct {
	// TokenFile holds the bearer token callers present. Default
	// <data_dir>/api.token, created (mode 0600) with a random token at the
	// first start and kept across restarts.
	TokenFile string `yaml:"token_file"`
}

// AnchorConfig sets how batches are cut for anchoring.
type AnchorConfig struct {
	BatchRecords int           `yaml:"batch_records"` // default 5000
	BatchAge     time.Duration `yaml:"batch_age"`     // default: the period
	// Period is how often the cut batches of every partition are anchored,
	// in one ledger transaction. Default 5s (batch_age if longer).
	Period time.Duration `yaml:"period"`
}

// AuditConfig sets the pace of the continuous re-verification of anchored
// history.
type AuditConfig struct {
	// Interval between audit rounds; negative turns the audit off.
	// Default 5s.
	Interval time.Duration `yaml:"interval"`
	// RecordsPerRound bounds the anchored records one round re-reads.
	// Default 200000.
	RecordsPerRound int64 `yaml:"records_per_round"`
}

// LedgerConfig selects the ledger backend.
type LedgerConfig struct {
	// Backend is "embedded" (default) or "fabric".
	Backend string `yaml:"backend"`
	// Fabric locates the network and this process's identity when Backend
	// is fabric; `make fabric-up` writes a file with these keys.
	Fabric fabric.Config `yaml:"fabric"`
}

// HTTPConfig is the operations endpoint: /metrics, /healthz, /readyz.
type HTTPConfig struct {
	// Listen is host:port. Default 127.0.0.1:9477; empty string after
	// defaults never happens, use "off" to disable.
	Listen string `yaml:"listen"`
}

// SimulatorConfig configures the fleet `chainwatch run` simulates on the
// embedded default, and the defaults of `chainwatch simulate`.
type SimulatorConfig struct {
	// Enabled runs the fleet inside `chainwatch run`. Default: on when the
	// broker is embedded, off against a real cluster.
	Enabled *bool  `yaml:"enabled"`
	Devices int    `yaml:"devices"` // default 48
	Seed    uint64 `yaml:"seed"`
	// Speed is simulated seconds per wall second. Default 60.
	Speed float64 `yaml:"speed"`
	// History is the attack-free event time produced at start. Default 25h.
	History          time.Duration `yaml:"history"`
	FirstAttackAfter time.Duration `yaml:"first_attack_after"` // default 5m
	AttackEvery      time.Duration `yaml:"attack_every"`       // default 20m
	// FirstTrustAfter and TrustEvery schedule the trust scenarios (rogue
	// device, forged signature, unapproved firmware, revocation). Defaults
	// 15m and 20m; a negative trust_every disables them.
	FirstTrustAfter time.Duration `yaml:"first_trust_after"`
	TrustEvery      time.Duration `yaml:"trust_every"`
	// GroundTruth CSV path. Default <data_dir>/ground-truth.csv.
	GroundTruth string `yaml:"ground_truth"`
}

// ProfilingConfig enables continuous profiling with pyroscope-go. Profiles
// carry the tags service=chainwatch and instance=<instance>, and CPU
// samples the pprof label stage=<stage> of the goroutine (detect,
// telemetry, anchor, audit, sink:<name>), so a flame graph splits by
// stage.
type ProfilingConfig struct {
	// PyroscopeServer is the server address; empty disables profiling.
	PyroscopeServer string `yaml:"pyroscope_server"`
	// Application name reported to Pyroscope. Default chainwatch.
	Application string `yaml:"application"`
	// Instance tags this process's profiles. Default: the host name.
	Instance string `yaml:"instance"`
	// BasicAuthUser and BasicAuthPassword authenticate to the server
	// (Grafana Cloud Profiles); the password may be ${NAME}, read from the
	// environment, and is never printed.
	BasicAuthUser     string        `yaml:"basic_auth_user"`
	BasicAuthPassword secret.Secret `yaml:"basic_auth_password"`
	// TenantID is sent as X-Scope-OrgID to a multi-tenant server.
	TenantID string `yaml:"tenant_id"`
	// UploadRate is how often profiles are sent. Default 15s.
	UploadRate time.Duration `yaml:"upload_rate"`
}

// withDefaults fills every zero value with its documented default.
func (c Config) withDefaults() Config {
	if c.DataDir == "" {
		c.DataDir = "./chainwatch-data"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.Kafka.EmbeddedListen == "" {
		c.Kafka.EmbeddedListen = "127.0.0.1:9092"
	}
	if c.Kafka.EmbeddedRetentionBytes == 0 {
		c.Kafka.EmbeddedRetentionBytes = 32 << 20
	}
	if c.Kafka.Partitions == 0 {
		c.Kafka.Partitions = 4
	}
	if c.Kafka.Replication == 0 {
		c.Kafka.Replication = 1
	}
	if c.Kafka.GroupID == "" {
		c.Kafka.GroupID = "chainwatch-detect"
	}
	if c.Kafka.AnchorGroupID == "" {
		c.Kafka.AnchorGroupID = "chainwatch-anchor"
	}
	c.Topics = c.Topics.WithDefaults()
	c.Window = c.Window.WithDefaults()
	c.Detector = c.Detector.WithDefaults()
	if c.Anchor.BatchRecords == 0 {
		c.Anchor.BatchRecords = 5000
	}
	if c.Anchor.Period == 0 {
		c.Anchor.Period = max(5*time.Second, c.Anchor.BatchAge)
	}
	if c.Anchor.BatchAge == 0 {
		c.Anchor.BatchAge = c.Anchor.Period
	}
	if c.Audit.Interval == 0 {
		c.Audit.Interval = 5 * time.Second
	}
	if c.Audit.RecordsPerRound == 0 {
		c.Audit.RecordsPerRound = 200_000
	}
	if c.Ledger.Backend == "" {
		c.Ledger.Backend = "embedded"
	}
	c.Ledger.Fabric = c.Ledger.Fabric.WithDefaults()
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = "127.0.0.1:9477"
	}
	if c.Simulator.Enabled == nil {
		on := len(c.Kafka.Brokers) == 0
		c.Simulator.Enabled = &on
	}
	if c.Simulator.Devices == 0 {
		c.Simulator.Devices = 48
	}
	if c.Simulator.Speed == 0 {
		c.Simulator.Speed = 60
	}
	if c.Simulator.History == 0 {
		c.Simulator.History = 25 * time.Hour
	}
	if c.Simulator.FirstAttackAfter == 0 {
		c.Simulator.FirstAttackAfter = 5 * time.Minute
	}
	if c.Simulator.AttackEvery == 0 {
		c.Simulator.AttackEvery = 20 * time.Minute
	}
	if c.Simulator.FirstTrustAfter == 0 {
		c.Simulator.FirstTrustAfter = 15 * time.Minute
	}
	if c.Simulator.TrustEvery == 0 {
		c.Simulator.TrustEvery = 20 * time.Minute
	}
	if c.Simulator.GroundTruth == "" {
		c.Simulator.GroundTruth = filepath.Join(c.DataDir, "ground-truth.csv")
	}
	if c.Alerts.QueueCapacity == 0 {
		c.Alerts.QueueCapacity = 10000
	}
	if c.Alerts.MaxBackoff == 0 {
		c.Alerts.MaxBackoff = 30 * time.Second
	}
	if c.Alerts.API.TokenFile == "" {
		c.Alerts.API.TokenFile = filepath.Join(c.DataDir, "api.token")
	}
	if c.Profiling.Instance == "" {
		c.Profiling.Instance, _ = os.Hostname()
	}
	if c.Profiling.UploadRate == 0 {
		c.Profiling.UploadRate = 15 * time.Second
	}
	if c.Profiling.Application == "" {
		c.Profiling.Application = "chainwatch"
	}
	return c
}

// Validate reports the first bad key, by its path in the file.
func (c Config) Validate() error {
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: must be debug, info, warn or error, got %q", c.LogLevel)
	}
	for i, b := range c.Kafka.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("kafka.brokers[%d]: %q is not host:port", i, b)
		}
	}
	if err := (kafkaconn.Config{TLS: c.Kafka.TLS, SASL: c.Kafka.SASL}).Validate(); err != nil {
		return fmt.Errorf("kafka.%w", err)
	}
	if len(c.Kafka.Brokers) == 0 {
		switch {
		case c.Kafka.TLS.On():
			return errors.New("kafka.tls: applies to the brokers of kafka.brokers, which is empty; the embedded broker is plaintext on loopback")
		case c.Kafka.SASL.On():
			return errors.New("kafka.sasl: applies to the brokers of kafka.brokers, which is empty; the embedded broker takes no SASL")
		}
	}
	if _, _, err := net.SplitHostPort(c.Kafka.EmbeddedListen); err != nil {
		return fmt.Errorf("kafka.embedded_listen: %q is not host:port", c.Kafka.EmbeddedListen)
	}
	switch {
	case c.Kafka.Partitions < 1:
		return fmt.Errorf("kafka.partitions: must be at least 1, got %d", c.Kafka.Partitions)
	case c.Kafka.Replication < 1:
		return fmt.Errorf("kafka.replication: must be at least 1, got %d", c.Kafka.Replication)
	case c.Window.Size <= 0:
		return fmt.Errorf("window.size: must be positive, got %s", c.Window.Size)
	case c.Window.AllowedLateness < 0:
		return fmt.Errorf("window.allowed_lateness: must not be negative, got %s", c.Window.AllowedLateness)
	case c.Anchor.BatchRecords < 1:
		return fmt.Errorf("anchor.batch_records: must be at least 1, got %d", c.Anchor.BatchRecords)
	case c.Anchor.BatchRecords > maxBatchRecords:
		return fmt.Errorf("anchor.batch_records: at most %d (a batch's leaf hashes, 32 bytes a record, are kept as one Kafka record, under the broker's default limit of about 1 MB), got %d",
			maxBatchRecords, c.Anchor.BatchRecords)
	case c.Anchor.BatchAge <= 0:
		return fmt.Errorf("anchor.batch_age: must be positive, got %s", c.Anchor.BatchAge)
	case c.Anchor.Period <= 0:
		return fmt.Errorf("anchor.period: must be positive, got %s", c.Anchor.Period)
	case c.Audit.RecordsPerRound < 1:
		return fmt.Errorf("audit.records_per_round: must be at least 1, got %d", c.Audit.RecordsPerRound)
	case c.Simulator.Devices < 1:
		return fmt.Errorf("simulator.devices: must be at least 1, got %d", c.Simulator.Devices)
	case c.Simulator.History < 0:
		return fmt.Errorf("simulator.history: must not be negative, got %s", c.Simulator.History)
	}
	for key, topic := range map[string]string{"topics.flows": c.Topics.Flows, "topics.telemetry": c.Topics.Telemetry, "topics.alerts": c.Topics.Alerts, "topics.dead_letter": c.Topics.DeadLetter, "topics.state": c.Topics.State, "topics.models": c.Topics.Models} {
		if err := validTopic(topic); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	if err := c.Detector.Validate(); err != nil {
		return fmt.Errorf("detector.%w", err)
	}
	if err := c.Retrain.Validate(); err != nil {
		return fmt.Errorf("retrain.%w", err)
	}
	if err := c.Alerts.validate(); err != nil {
		return fmt.Errorf("alerts.%w", err)
	}
	switch c.Ledger.Backend {
	case "embedded":
	case "fabric":
		if err := c.Ledger.Fabric.Validate(); err != nil {
			return fmt.Errorf("ledger.fabric.%w", err)
		}
	default:
		return fmt.Errorf("ledger.backend: must be embedded or fabric, got %q", c.Ledger.Backend)
	}
	if c.HTTP.Listen != "off" {
		if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
			return fmt.Errorf("http.listen: %q is not host:port (or off)", c.HTTP.Listen)
		}
	}
	return nil
}

func (a AlertsConfig) validate() error {
	names := map[string]bool{}
	for i, w := range a.Webhooks {
		if err := w.Validate(); err != nil {
			return fmt.Errorf("webhooks[%d].%w", i, err)
		}
		if names[w.Name] {
			return fmt.Errorf("webhooks[%d].name: %q is used twice", i, w.Name)
		}
		names[w.Name] = true
	}
	if _, err := sinks.NewLinker(a.LinkTemplate); err != nil {
		return fmt.Errorf("link_template: %w", err)
	}
	switch {
	case a.QueueCapacity < 1:
		return fmt.Errorf("queue_capacity: must be at least 1, got %d", a.QueueCapacity)
	case a.MaxBackoff < 0:
		return fmt.Errorf("max_backoff: must not be negative, got %s", a.MaxBackoff)
	}
	return nil
}

// sinks builds the configured webhooks; secrets are resolved from environ.
func (a AlertsConfig) buildSinks(environ []string) ([]sinks.Sink, error) {
	links, err := sinks.NewLinker(a.LinkTemplate)
	if err != nil {
		return nil, fmt.Errorf("alerts.link_template: %w", err)
	}
	var out []sinks.Sink
	for i, w := range a.Webhooks {
		s, err := sinks.New(w, links, environ)
		if err != nil {
			return nil, fmt.Errorf("alerts.webhooks[%d].%w", i, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func validTopic(t string) error {
	if t == "" || len(t) > 249 {
		return fmt.Errorf("topic name must be 1–249 characters, got %q", t)
	}
	for _, r := range t {
		if !(r == '.' || r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return fmt.Errorf("topic %q: only letters, digits, '.', '_' and '-' are allowed", t)
		}
	}
	return nil
}

// LoadConfig reads the YAML file at path (none when empty), applies the
// environment overrides, fills defaults and validates.
func LoadConfig(path string, environ []string) (Config, error) {
	var c Config
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return Config{}, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := applyEnv(&c, environ); err != nil {
		return Config{}, err
	}
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

const envPrefix = "CHAINWATCH_"

// applyEnv sets every key whose environment variable is present.
func applyEnv(c *Config, environ []string) error {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, envPrefix) {
			env[k] = v
		}
	}
	known := map[string]bool{}
	err := walkKeys(reflect.ValueOf(c).Elem(), "", func(key string, v reflect.Value) error {
		name := envName(key)
		known[name] = true
		raw, ok := env[name]
		if !ok {
			return nil
		}
		if err := setFromString(v, raw); err != nil {
			return fmt.Errorf("config: %s (%s): %w", name, key, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for name := range env {
		if !known[name] && !ignoredEnv[name] {
			return fmt.Errorf("config: environment variable %s names no configuration key", name)
		}
	}
	return nil
}

// ignoredEnv are CHAINWATCH_ variables that are not configuration keys.
var ignoredEnv = map[string]bool{"CHAINWATCH_LEDGER_CHILD": true, "CHAINWATCH_CRASH_CHILD": true}

func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// walkKeys calls fn for every leaf field of v with its dotted YAML key.
func walkKeys(v reflect.Value, prefix string, fn func(key string, v reflect.Value) error) error {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		key := tag
		if prefix != "" {
			key = prefix + "." + tag
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(time.Time{}) {
			if err := walkKeys(fv, key, fn); err != nil {
				return err
			}
			continue
		}
		if err := fn(key, fv); err != nil {
			return err
		}
	}
	return nil
}

func setFromString(v reflect.Value, raw string) error {
	if v.Kind() == reflect.Pointer {
		p := reflect.New(v.Type().Elem())
		if err := setFromString(p.Elem(), raw); err != nil {
			return err
		}
		v.Set(p)
		return nil
	}
	if v.Type() == reflect.TypeOf(time.Duration(0)) {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("%q is not a duration like 90s or 24h", raw)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("%q is not true or false", raw)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", raw)
		}
		v.SetInt(n)
	case reflect.Uint64, reflect.Uint, reflect.Uint32:
		n, err := strconv.ParseUint(raw, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a non-negative integer", raw)
		}
		v.SetUint(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", raw)
		}
		v.SetFloat(f)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("a list of %s is set in the configuration file, not in the environment", v.Type().Elem().Name())
		}
		var items []string
		for _, s := range strings.Split(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		v.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}

// printable renders the configuration as YAML with durations as text and
// each key's environment variable as a comment.
func (c Config) printable() ([]byte, error) {
	root := &yaml.Node{Kind: yaml.MappingNode}
	mappings := map[string]*yaml.Node{"": root}
	// mapping returns the YAML mapping node of a dotted path, creating it
	// (and its parents) in first-seen order.
	var mapping func(path string) *yaml.Node
	mapping = func(path string) *yaml.Node {
		if m := mappings[path]; m != nil {
			return m
		}
		parent, name := "", path
		if i := strings.LastIndex(path, "."); i >= 0 {
			parent, name = path[:i], path[i+1:]
		}
		m := &yaml.Node{Kind: yaml.MappingNode}
		p := mapping(parent)
		p.Content = append(p.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: name}, m)
		mappings[path] = m
		return m
	}
	err := walkKeys(reflect.ValueOf(&c).Elem(), "", func(key string, v reflect.Value) error {
		parentPath, name := "", key
		if i := strings.LastIndex(key, "."); i >= 0 {
			parentPath, name = key[:i], key[i+1:]
		}
		parent := mapping(parentPath)
		val := &yaml.Node{}
		x := v.Interface()
		if d, ok := x.(time.Duration); ok {
			x = d.String()
		}
		if p, ok := x.(*bool); ok && p != nil {
			x = *p
		}
		if err := val.Encode(x); err != nil {
			return err
		}
		k := &yaml.Node{Kind: yaml.ScalarNode, Value: name, LineComment: envName(key)}
		if val.Kind == yaml.SequenceNode && (len(val.Content) == 0 || val.Content[0].Kind == yaml.ScalarNode) {
			val.Style = yaml.FlowStyle
			val.LineComment = envName(key)
		}
		parent.Content = append(parent.Content, k, val)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// maxBatchRecords is the largest anchor batch whose leaf hashes (32 bytes a
// record) fit one record of the leaf topic (kafkaconn.MaxBatchBytes).
const maxBatchRecords = kafkaconn.MaxBatchBytes / 32
