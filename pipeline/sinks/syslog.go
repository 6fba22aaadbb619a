package sinks

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chainwatch/chainwatch/ledgerclient/contract"
)

// syslogSink sends alerts as ArcSight CEF lines in RFC 5424 syslog
// messages over TCP, optionally TLS, framed by octet counting (RFC 5425
// §4.3, RFC 6587 §3.4.1): "<length> <message>". rsyslog's imtcp, syslog-ng
// and the SIEMs' syslog collectors take this framing.
type syslogSink struct {
	cfg      WebhookConfig
	filter   Filter
	links    *Linker
	addr     string
	tls      *tls.Config
	hostname string

	mu   sync.Mutex
	conn net.Conn
}

func newSyslogSink(c WebhookConfig, f Filter, l *Linker, tlsCfg *tls.Config) (*syslogSink, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	s := &syslogSink{cfg: c, filter: f, links: l, addr: u.Host}
	if u.Scheme == "tls" {
		s.tls = tlsCfg
		if s.tls.ServerName == "" {
			s.tls.ServerName = u.Hostname()
		}
	}
	if s.hostname, err = os.Hostname(); err != nil || s.hostname == "" {
		s.hostname = "-"
	}
	return s, nil
}

func (s *syslogSink) Name() string   { return s.cfg.Name }
func (s *syslogSink) BatchSize() int { return 100 }

// Close closes the connection.
func (s *syslogSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		err := s.conn.Close()
		s.conn = nil
		return err
	}
	return nil
}

func (s *syslogSink) Deliver(ctx context.Context, alerts []contract.Alert) error {
	var frames []byte
	for _, a := range alerts {
		if !s.filter.Match(a) {
			continue
		}
		msg := s.message(NewPayload(a, s.links))
		frames = strconv.AppendInt(frames, int64(len(msg)), 10)
		frames = append(frames, ' ')
		frames = append(frames, msg...)
	}
	if len(frames) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		d := net.Dialer{Timeout: s.cfg.Timeout}
		var (
			conn net.Conn
			err  error
		)
		if s.tls != nil {
			conn, err = (&tls.Dialer{NetDialer: &d, Config: s.tls}).DialContext(ctx, "tcp", s.addr)
		} else {
			conn, err = d.DialContext(ctx, "tcp", s.addr)
		}
		if err != nil {
			return fmt.Errorf("syslog %s: %w", s.addr, err)
		}
		s.conn = conn
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
	if _, err := s.conn.Write(frames); err != nil {
		s.conn.Close()
		s.conn = nil
		return fmt.Errorf("syslog %s: %w", s.addr, err)
	}
	return nil
}

// syslogSeverity maps an alert's severity to RFC 5424's: crit, err,
// warning, notice.
var syslogSeverity = map[string]int{SeverityCritical: 2, SeverityHigh: 3, SeverityMedium: 4, SeverityLow: 5}

// cefSeverity maps it to CEF's 0–10 scale.
var cefSeverity = map[string]int{SeverityCritical: 10, SeverityHigh: 8, SeverityMedium: 5, SeverityLow: 3}

// facilityLocal0 is the syslog facility of the messages (16, local0).
const facilityLocal0 = 16

// message renders one RFC 5424 message with the CEF line as its MSG:
// <PRI>1 TIMESTAMP HOSTNAME chainwatch - ALERT - CEF:0|…
func (s *syslogSink) message(p Payload) []byte {
	pri := facilityLocal0*8 + syslogSeverity[p.Severity]
	head := fmt.Sprintf("<%d>1 %s %s chainwatch - ALERT - ", pri, time.Now().UTC().Format(time.RFC3339Nano), s.hostname)
	return append([]byte(head), CEF(p)...)
}

// CEF renders an alert as an ArcSight Common Event Format line:
// CEF:Version|Device Vendor|Device Product|Device Version|Signature ID|Name|Severity|Extension,
// escaping '\' and '|' in the header and '\', '=' and line breaks in
// extension values, as the CEF specification (v25) requires.
func CEF(p Payload) string {
	var b strings.Builder
	b.WriteString("CEF:0|chainwatch|chainwatch|1|")
	b.WriteString(cefHeader(p.Kind))
	b.WriteByte('|')
	b.WriteString(cefHeader(p.Summary))
	b.WriteByte('|')
	b.WriteString(strconv.Itoa(cefSeverity[p.Severity]))
	b.WriteByte('|')
	ext := [][2]string{
		{"rt", strconv.FormatInt(p.WindowEnd.UnixMilli(), 10)},
		{"start", strconv.FormatInt(p.WindowStart.UnixMilli(), 10)},
		{"end", strconv.FormatInt(p.WindowEnd.UnixMilli(), 10)},
		{"externalId", p.ID},
		{"dvchost", p.DeviceID},
		{"cat", p.Severity},
		{"cfp1Label", "score"}, {"cfp1", strconv.FormatFloat(p.Score, 'f', 4, 64)},
		{"cs1Label", "profile"}, {"cs1", p.Profile},
		{"cs2Label", "confidence"}, {"cs2", p.Confidence},
		{"cs3Label", "topFeatures"}, {"cs3", TopFeatures(p.Alert)},
		{"cs4Label", "ledgerTxId"}, {"cs4", p.TxID},
		{"cs5Label", "modelHash"}, {"cs5", p.ModelHash},
		{"cs6Label", "anchorIds"}, {"cs6", strings.Join(p.Evidence.AnchorIDs, ",")},
		{"request", p.Link},
		{"msg", p.Evidence.Detail},
	}
	if p.Incident != nil {
		ext = append(ext, [2]string{"flexString1Label", "incident"}, [2]string{"flexString1", p.Incident.ID + " " + p.Incident.Status})
	}
	first := true
	for _, kv := range ext {
		if kv[1] == "" {
			continue
		}
		if !first {
			b.WriteByte(' ')
		}
		first = false
		b.WriteString(kv[0])
		b.WriteByte('=')
		b.WriteString(cefValue(kv[1]))
	}
	return b.String()
}

var (
	cefHeaderEscaper = strings.NewReplacer(`\`, `\\`, `|`, `\|`, "\n", " ", "\r", " ")
	cefValueEscaper  = strings.NewReplacer(`\`, `\\`, `=`, `\=`, "\n", `\n`, "\r", `\r`)
)

func cefHeader(s string) string { return cefHeaderEscaper.Replace(s) }
func cefValue(s string) string  { return cefValueEscaper.Replace(s) }
