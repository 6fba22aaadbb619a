package kafkaconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	kgoplain "github.com/segmentio/kafka-go/sasl/plain"
	kgoscram "github.com/segmentio/kafka-go/sasl/scram"
	"github.com/twmb/franz-go/pkg/kgo"
	franzsasl "github.com/twmb/franz-go/pkg/sasl"
	franzplain "github.com/twmb/franz-go/pkg/sasl/plain"
	franzscram "github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/chainwatch/chainwatch/pipeline/secret"
)

// Cluster is a Kafka cluster with its credentials resolved: certificates
// loaded, the password read. It builds the connections of both clients.
// A Cluster is immutable and safe for concurrent use.
type Cluster struct {
	brokers []string
	tls     *tls.Config
	mech    string
	user    string
	pass    secret.Secret
}

// Plain is a cluster reached without TLS or SASL, such as the embedded
// broker.
func Plain(brokers ...string) *Cluster {
	return &Cluster{brokers: append([]string(nil), brokers...)}
}

// Open resolves c: it validates it, loads the TLS files and reads the SASL
// password from where c says. Errors name the key (below kafka) at fault.
// environ is the process environment (os.Environ()), passed in so tests
// need not touch it.
func (c Config) Open(environ []string) (*Cluster, error) {
	if len(c.Brokers) == 0 {
		return nil, errors.New("brokers: none given")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cl := Plain(c.Brokers...)
	if c.TLS.On() {
		cfg, err := c.TLS.load()
		if err != nil {
			return nil, err
		}
		cl.tls = cfg
	}
	if c.SASL.On() {
		pass, err := c.SASL.password(environ)
		if err != nil {
			return nil, err
		}
		cl.mech, cl.user, cl.pass = strings.ToUpper(c.SASL.Mechanism), c.SASL.Username, pass
	}
	return cl, nil
}

func (t TLS) load() (*tls.Config, error) {
	return secret.TLSFiles{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}.Load()
}

func (s SASL) password(environ []string) (secret.Secret, error) {
	var (
		pass secret.Secret
		key  string
	)
	switch {
	case s.PasswordFile != "":
		v, err := secret.FromFile(s.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("sasl.password_file: %w", err)
		}
		pass, key = v, "sasl.password_file"
	case s.PasswordEnv != "":
		v, ok := secret.Lookup(environ, s.PasswordEnv)
		if !ok {
			return "", fmt.Errorf("sasl.password_env: environment variable %s is not set", s.PasswordEnv)
		}
		pass, key = secret.Secret(v), "sasl.password_env"
	case s.Password != "":
		pass, key = s.Password, "sasl.password"
	default:
		v, ok := secret.Lookup(environ, DefaultPasswordEnv)
		if !ok {
			return "", fmt.Errorf("sasl.password: no password: set %s, or kafka.sasl.password_env or kafka.sasl.password_file", DefaultPasswordEnv)
		}
		pass, key = secret.Secret(v), "sasl.password"
	}
	if pass == "" {
		return "", fmt.Errorf("%s: the password is empty", key)
	}
	return pass, nil
}

// Brokers returns the bootstrap brokers.
func (c *Cluster) Brokers() []string { return append([]string(nil), c.brokers...) }

// Secured reports what protects the connections, for logs: "plaintext",
// "TLS", "SASL_PLAINTEXT/SCRAM-SHA-256" or "SASL_SSL/PLAIN".
func (c *Cluster) Secured() string {
	switch {
	case c.mech != "" && c.tls != nil:
		return "SASL_SSL/" + c.mech
	case c.mech != "":
		return "SASL_PLAINTEXT/" + c.mech
	case c.tls != nil:
		return "TLS"
	}
	return "plaintext"
}

// Username is the SASL user, empty without SASL.
func (c *Cluster) Username() string { return c.user }

func (c *Cluster) tlsConfig() *tls.Config {
	if c.tls == nil {
		return nil
	}
	return c.tls.Clone()
}

// kafkaGoSASL is the mechanism for kafka-go.
func (c *Cluster) kafkaGoSASL() sasl.Mechanism {
	switch c.mech {
	case MechanismPlain:
		return kgoplain.Mechanism{Username: c.user, Password: c.pass.Reveal()}
	case MechanismSCRAMSHA256, MechanismSCRAMSHA512:
		algo := kgoscram.SHA256
		if c.mech == MechanismSCRAMSHA512 {
			algo = kgoscram.SHA512
		}
		// Mechanism fails only when the username or password is not
		// valid SASLprep text; the handshake then reports it.
		m, err := kgoscram.Mechanism(algo, c.user, c.pass.Reveal())
		if err != nil {
			return failedMechanism{c.mech, err}
		}
		return m
	}
	return nil
}

// failedMechanism carries a SASLprep error to the handshake, where kafka-go
// reports it as the connection's error.
type failedMechanism struct {
	name string
	err  error
}

func (f failedMechanism) Name() string { return f.name }
func (f failedMechanism) Start(context.Context) (sasl.StateMachine, []byte, error) {
	return nil, nil, fmt.Errorf("sasl credentials: %w", f.err)
}

// Dialer is a kafka-go dialer for single connections (admin calls,
// partition offsets) and partition readers.
func (c *Cluster) Dialer() *kafka.Dialer {
	return &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, TLS: c.tlsConfig(), SASLMechanism: c.kafkaGoSASL()}
}

// Transport is a kafka-go transport for writers and kafka.Client.
func (c *Cluster) Transport() *kafka.Transport {
	return &kafka.Transport{TLS: c.tlsConfig(), SASL: c.kafkaGoSASL()}
}

// Addr is the kafka-go address of the bootstrap brokers.
func (c *Cluster) Addr() net.Addr { return kafka.TCP(c.brokers...) }

// Reader returns a kafka-go reader of cfg with this cluster's brokers and
// dialer filled in.
func (c *Cluster) Reader(cfg kafka.ReaderConfig) *kafka.Reader {
	cfg.Brokers = c.Brokers()
	cfg.Dialer = c.Dialer()
	return kafka.NewReader(cfg)
}

// Dial connects to the first bootstrap broker that answers.
func (c *Cluster) Dial(ctx context.Context) (*kafka.Conn, error) {
	d := c.Dialer()
	var errs []error
	for _, b := range c.brokers {
		conn, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", b, err))
	}
	return nil, c.explain(errors.Join(errs...))
}

// DialLeader connects to the leader of a partition.
func (c *Cluster) DialLeader(ctx context.Context, topic string, partition int) (*kafka.Conn, error) {
	d := c.Dialer()
	var errs []error
	for _, b := range c.brokers {
		conn, err := d.DialLeader(ctx, "tcp", b, topic, partition)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", b, err))
	}
	return nil, c.explain(errors.Join(errs...))
}

// ClientOpts are the franz-go options that reach this cluster.
func (c *Cluster) ClientOpts() []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(c.brokers...)}
	if c.tls != nil {
		opts = append(opts, kgo.DialTLSConfig(c.tlsConfig()))
	}
	var m franzsasl.Mechanism
	switch c.mech {
	case MechanismPlain:
		m = franzplain.Auth{User: c.user, Pass: c.pass.Reveal()}.AsMechanism()
	case MechanismSCRAMSHA256:
		m = franzscram.Auth{User: c.user, Pass: c.pass.Reveal()}.AsSha256Mechanism()
	case MechanismSCRAMSHA512:
		m = franzscram.Auth{User: c.user, Pass: c.pass.Reveal()}.AsSha512Mechanism()
	}
	if m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts
}
