package kafkaconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Check connects to the cluster with both clients, authenticates and asks
// for metadata, so that a wrong certificate, password or mechanism stops
// start-up with an error naming the setting at fault rather than showing
// up later as stalled stages. Without a deadline on ctx it gives up after
// 30 s.
func (c *Cluster) Check(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	conn, err := c.Dial(ctx)
	if err != nil {
		return err
	}
	_, err = conn.Brokers()
	conn.Close()
	if err != nil {
		return c.explain(fmt.Errorf("metadata: %w", err))
	}
	client, err := kgo.NewClient(c.ClientOpts()...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer client.Close()
	if err := client.Ping(ctx); err != nil {
		return c.explain(err)
	}
	return nil
}

// explain turns a connection error into one that names the setting to
// look at. Its keys are full configuration paths, since it is what an
// operator reads when start-up fails.
func (c *Cluster) explain(err error) error {
	if err == nil {
		return nil
	}
	var (
		unknownCA *x509.UnknownAuthorityError
		badHost   x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		notTLS    tls.RecordHeaderError
	)
	msg := err.Error()
	switch {
	case errors.Is(err, kafka.SASLAuthenticationFailed), errors.Is(err, kerr.SaslAuthenticationFailed):
		return fmt.Errorf("kafka.sasl: the brokers refused user %q with %s: check kafka.sasl.username and the password: %w", c.user, c.mech, err)
	case errors.Is(err, kafka.UnsupportedSASLMechanism), errors.Is(err, kerr.UnsupportedSaslMechanism):
		return fmt.Errorf("kafka.sasl.mechanism: the brokers do not offer %s: %w", c.mech, err)
	case errors.As(err, &badHost):
		return fmt.Errorf("kafka.tls.server_name: the broker's certificate is not valid for the name dialled: %w", err)
	case errors.As(err, &unknownCA), errors.As(err, &verify), errors.As(err, &invalid):
		return fmt.Errorf("kafka.tls.ca_file: the broker's certificate is not signed by a trusted authority: %w", err)
	case errors.As(err, &notTLS):
		return fmt.Errorf("kafka.tls: the broker does not speak TLS on this port: %w", err)
	case strings.Contains(msg, "remote error: tls: certificate required"), strings.Contains(msg, "remote error: tls: bad certificate"):
		return fmt.Errorf("kafka.tls.cert_file: the broker wants a client certificate it trusts: %w", err)
	case c.tls != nil && errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("kafka.tls: no TLS handshake completed in time; does the broker listen for TLS on this port? %w", err)
	case c.tls == nil && c.mech == "" && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)):
		return fmt.Errorf("kafka: the brokers closed the connection; if the cluster requires TLS or SASL, set kafka.tls and kafka.sasl: %w", err)
	case c.mech == "" && (errors.Is(err, kafka.IllegalSASLState) || errors.Is(err, kerr.IllegalSaslState) || errors.Is(err, kerr.SaslAuthenticationFailed)):
		return fmt.Errorf("kafka.sasl: the brokers require SASL authentication; set kafka.sasl.mechanism and credentials: %w", err)
	}
	return fmt.Errorf("kafka: no broker answers at %s (%s): %w", strings.Join(c.brokers, ","), c.Secured(), err)
}
