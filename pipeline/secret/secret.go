// Package secret holds credentials read from configuration — Kafka SASL
// passwords, webhook signing keys, SIEM tokens — as a type that never
// shows itself, and resolves them from the places an operator keeps them:
// a file (a mounted Kubernetes or Docker secret) or an environment
// variable. It also loads the TLS material clients present and trust
// (tls.go), which both the Kafka connections and the alert sinks use.
package secret

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Secret is a string that never shows itself: fmt, slog, JSON and YAML
// rendering print "<redacted>" in its place, so a credential held in one
// cannot end up in a log line, an error or `chainwatch config print`.
// Reveal returns the value for the one place that needs it.
type Secret string

const redacted = "<redacted>"

// Reveal returns the credential itself.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer, for %#v.
func (s Secret) GoString() string { return s.String() }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalYAML implements yaml.Marshaler.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalText implements encoding.TextMarshaler, which JSON uses.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Lookup returns the value of name in environ (KEY=value entries).
func Lookup(environ []string, name string) (string, bool) {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

// Expand resolves a configured value of the form ${NAME} from environ, so
// that a file can say `secret: ${SIEM_SECRET}`; any other value is
// returned as it is. An unset variable is an error naming it.
func Expand(s Secret, environ []string) (Secret, error) {
	v := string(s)
	if strings.HasPrefix(v, "${") && strings.HasSuffix(v, "}") {
		name := v[2 : len(v)-1]
		got, ok := Lookup(environ, name)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
		return Secret(got), nil
	}
	return s, nil
}

// FromFile reads a credential from a file, less a trailing newline.
func FromFile(path string) (Secret, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return Secret(strings.TrimRight(string(raw), "\r\n")), nil
}
