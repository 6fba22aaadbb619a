// Package kafkaconn holds the one place where chainwatch's Kafka
// connections are configured: the brokers, TLS and SASL. Both Kafka
// clients in the binary — franz-go for the consumer groups and kafka-go for
// producers, partition readers and admin calls — are built from a Cluster,
// so a setting changed here reaches every connection: the detection,
// telemetry, anchoring and audit consumers, the alert and dead-letter
// producers, the state store, replay and prove, topic creation and the
// simulator.
//
// The zero Config is a plaintext connection without authentication, which
// is what the embedded broker speaks.
package kafkaconn

import (
	"errors"
	"fmt"
	"strings"

	"github.com/chainwatch/chainwatch/pipeline/secret"
)

// Config is how to reach and authenticate to a Kafka cluster. Its YAML
// keys are the kafka.tls.* and kafka.sasl.* keys of chainwatch's
// configuration file.
type Config struct {
	// Brokers are the bootstrap brokers, host:port.
	Brokers []string `yaml:"-"`
	TLS     TLS      `yaml:"tls"`
	SASL    SASL     `yaml:"sasl"`
}

// TLS configures encryption of every connection. Zero value: plaintext.
type TLS struct {
	// Enabled turns TLS on. It is implied by any other TLS key being set.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the certificate authorities that sign the
	// brokers' certificates. Empty: the system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// clusters that authenticate clients by certificate (mutual TLS).
	// Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked against the brokers'
	// certificates. Empty: the host of the broker address dialled.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any broker certificate. For tests only:
	// it makes TLS worthless against an active attacker, and start-up logs
	// a warning when it is set.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// On reports whether connections use TLS.
func (t TLS) On() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// SASL mechanisms chainwatch speaks.
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
)

// DefaultPasswordEnv is the environment variable the SASL password is read
// from when none of password, password_env and password_file is set.
const DefaultPasswordEnv = "CHAINWATCH_KAFKA_SASL_PASSWORD"

// SASL configures authentication. Zero value: none.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty turns SASL
	// off. PLAIN sends the password as is: use it only over TLS.
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	// The password comes from exactly one of: PasswordFile (a file whose
	// content, less a trailing newline, is the password: a Kubernetes or
	// Docker secret), PasswordEnv (the name of an environment variable),
	// or Password itself (which the CHAINWATCH_KAFKA_SASL_PASSWORD
	// variable sets; avoid writing it in a file). With none of them set
	// the password is read from CHAINWATCH_KAFKA_SASL_PASSWORD.
	PasswordFile string        `yaml:"password_file"`
	PasswordEnv  string        `yaml:"password_env"`
	Password     secret.Secret `yaml:"password"`
}

// On reports whether connections authenticate with SASL.
func (s SASL) On() bool { return s.Mechanism != "" }

// Validate reports the first bad key, by its path below kafka (for example
// "sasl.username: ..."). It checks the settings, not the files or the
// environment they name: Open does that.
func (c Config) Validate() error {
	t := c.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		if t.CertFile == "" {
			return errors.New("tls.cert_file: must be set with tls.key_file")
		}
		return errors.New("tls.key_file: must be set with tls.cert_file")
	}
	s := c.SASL
	switch strings.ToUpper(s.Mechanism) {
	case "":
		if s.Username != "" || s.Password != "" || s.PasswordEnv != "" || s.PasswordFile != "" {
			return errors.New("sasl.mechanism: credentials are set but no mechanism; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
		}
		return nil
	case MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512:
	default:
		return fmt.Errorf("sasl.mechanism: must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got %q", s.Mechanism)
	}
	if s.Username == "" {
		return fmt.Errorf("sasl.username: required with sasl.mechanism %s", s.Mechanism)
	}
	sources := 0
	for _, set := range []bool{s.Password != "", s.PasswordEnv != "", s.PasswordFile != ""} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		return errors.New("sasl.password: set only one of password, password_env and password_file")
	}
	return nil
}
