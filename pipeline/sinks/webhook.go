package sinks

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"time"

	"github.com/chainwatch/chainwatch/pipeline/secret"
)

// Formats a webhook can speak.
const (
	FormatJSON         = "json"
	FormatSplunkHEC    = "splunk-hec"
	FormatECS          = "ecs"
	FormatCEFSyslog    = "cef-syslog"
	FormatAlertmanager = "alertmanager"
)

// WebhookConfig is one entry of alerts.webhooks: a remote sink with its
// own queue. Zero values are the documented defaults.
type WebhookConfig struct {
	// Name labels the sink's metrics, log lines and dead-letter file.
	Name string `yaml:"name"`
	// URL is the endpoint: for json and splunk-hec the URL posted to; for
	// ecs the Elasticsearch base URL (/_bulk is appended); for
	// alertmanager its base URL (/api/v2/alerts is appended); for
	// cef-syslog tcp://host:port or tls://host:port.
	URL string `yaml:"url"`
	// Format is json, splunk-hec, ecs, cef-syslog or alertmanager.
	Format string `yaml:"format"`
	// Secret is the HMAC key for json (required), the HEC token for
	// splunk-hec (required), an API key for ecs and a bearer token for
	// alertmanager (both optional). A value of the form ${NAME} is read
	// from that environment variable; SecretFile reads it from a file.
	Secret     secret.Secret `yaml:"secret"`
	SecretFile string        `yaml:"secret_file"`
	// MinSeverity (low, medium, high, critical) and Kinds filter what the
	// sink receives. Default: everything.
	MinSeverity string   `yaml:"min_severity"`
	Kinds       []string `yaml:"kinds"`
	// Timeout of one delivery. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// TLS for https:// and tls:// endpoints. Default: the system's roots.
	TLS WebhookTLS `yaml:"tls"`
	// Index is the Elasticsearch index (or data stream) of ecs documents.
	// Default chainwatch-alerts.
	Index string `yaml:"index"`
}

// WebhookTLS verifies the receiver and, optionally, presents a client
// certificate.
type WebhookTLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

var sinkName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// reserved are the names of the built-in sinks.
var reserved = map[string]bool{"ledger": true, "kafka": true, "log": true}

// Validate reports the first bad key, by its name in the entry.
func (c WebhookConfig) Validate() error {
	if !sinkName.MatchString(c.Name) || reserved[c.Name] {
		return fmt.Errorf("name: %q must be lower-case letters, digits, '-' or '_' and not ledger, kafka or log", c.Name)
	}
	u, err := url.Parse(c.URL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("url: %q is not an absolute URL", c.URL)
	}
	switch c.Format {
	case FormatCEFSyslog:
		if u.Scheme != "tcp" && u.Scheme != "tls" {
			return fmt.Errorf("url: cef-syslog takes tcp://host:port or tls://host:port, got %q", c.URL)
		}
	case FormatJSON, FormatSplunkHEC, FormatECS, FormatAlertmanager:
		if u.Scheme != "http" && u.Scheme != "https" {
			return fmt.Errorf("url: %s takes http:// or https://, got %q", c.Format, c.URL)
		}
	default:
		return fmt.Errorf("format: must be json, splunk-hec, ecs, cef-syslog or alertmanager, got %q", c.Format)
	}
	if c.Secret != "" && c.SecretFile != "" {
		return errors.New("secret: set secret or secret_file, not both")
	}
	if (c.Format == FormatJSON || c.Format == FormatSplunkHEC) && c.Secret == "" && c.SecretFile == "" {
		return fmt.Errorf("secret: required for %s (the HMAC key for json, the HEC token for splunk-hec)", c.Format)
	}
	if c.MinSeverity != "" && !ValidSeverity(c.MinSeverity) {
		return fmt.Errorf("min_severity: must be low, medium, high or critical, got %q", c.MinSeverity)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("timeout: must not be negative, got %s", c.Timeout)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("tls.cert_file: set with tls.key_file")
	}
	return nil
}

func (c WebhookConfig) withDefaults() WebhookConfig {
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Index == "" {
		c.Index = "chainwatch-alerts"
	}
	return c
}

// resolveSecret returns the credential from where the entry says.
func (c WebhookConfig) resolveSecret(environ []string) (secret.Secret, error) {
	if c.SecretFile != "" {
		s, err := secret.FromFile(c.SecretFile)
		if err != nil {
			return "", fmt.Errorf("secret_file: %w", err)
		}
		return s, nil
	}
	s, err := secret.Expand(c.Secret, environ)
	if err != nil {
		return "", fmt.Errorf("secret: %w", err)
	}
	return s, nil
}

func (t WebhookTLS) config() (*tls.Config, error) {
	return secret.TLSFiles{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, InsecureSkipVerify: t.InsecureSkipVerify}.Load()
}

// New builds the sink an entry describes. Errors name the key.
func New(c WebhookConfig, links *Linker, environ []string) (Sink, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c = c.withDefaults()
	key, err := c.resolveSecret(environ)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := c.TLS.config()
	if err != nil {
		return nil, err
	}
	filter := Filter{MinSeverity: c.MinSeverity, Kinds: c.Kinds}
	if c.Format == FormatCEFSyslog {
		return newSyslogSink(c, filter, links, tlsCfg)
	}
	return newHTTPSink(c, key, filter, links, tlsCfg)
}
