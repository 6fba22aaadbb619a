// Package kafkatest starts a secured kfake cluster for tests: TLS with a
// certificate authority made for the test (optionally requiring client
// certificates), SASL with a SCRAM or PLAIN user, or both. The files a
// client needs (CA, client certificate and key, password) are written to a
// test directory, because chainwatch reads them from files.
package kafkatest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/chainwatch/chainwatch/pipeline/kafkaconn"
)

// Options choose the cluster's security.
type Options struct {
	// TLS serves TLS; ClientCerts also requires a client certificate
	// signed by the test CA (mutual TLS).
	TLS         bool
	ClientCerts bool
	// Mechanism enables SASL with one user of that mechanism.
	Mechanism string
	// Partitions of topics created by clients. Default 4.
	Partitions int
}

// Cluster is a running secured kfake cluster.
type Cluster struct {
	Addr string
	// Dir holds ca.pem, client.pem, client-key.pem, other-ca.pem (a CA
	// that did not sign the broker) and password.
	Dir      string
	User     string
	Password string
	// Config is a kafkaconn.Config that reaches the cluster, with the
	// password taken from the file in Dir.
	Config kafkaconn.Config
}

// Start starts the cluster; it is closed when the test ends.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	dir := t.TempDir()
	c := &Cluster{Dir: dir, User: "chainwatch", Password: "s3cret-Pa55-" + randomHex(t)}
	parts := o.Partitions
	if parts == 0 {
		parts = 4
	}
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.DefaultNumPartitions(parts), kfake.AllowAutoTopicCreation()}
	if o.TLS {
		ca, caKey := newCA(t, "chainwatch test CA")
		writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw)
		other, _ := newCA(t, "some other CA")
		writePEM(t, filepath.Join(dir, "other-ca.pem"), "CERTIFICATE", other.Raw)
		server := newLeaf(t, ca, caKey, "localhost", x509.ExtKeyUsageServerAuth)
		client := newLeaf(t, ca, caKey, "chainwatch", x509.ExtKeyUsageClientAuth)
		writePEM(t, filepath.Join(dir, "client.pem"), "CERTIFICATE", client.Certificate[0])
		der, err := x509.MarshalECPrivateKey(client.PrivateKey.(*ecdsa.PrivateKey))
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(dir, "client-key.pem"), "EC PRIVATE KEY", der)
		cfg := &tls.Config{Certificates: []tls.Certificate{server}, MinVersion: tls.VersionTLS12}
		if o.ClientCerts {
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
		}
		opts = append(opts, kfake.TLS(cfg))
		c.Config.TLS = kafkaconn.TLS{Enabled: true, CAFile: filepath.Join(dir, "ca.pem")}
		if o.ClientCerts {
			c.Config.TLS.CertFile, c.Config.TLS.KeyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
		}
	}
	if o.Mechanism != "" {
		opts = append(opts, kfake.EnableSASL(), kfake.Superuser(o.Mechanism, c.User, c.Password))
		if err := os.WriteFile(filepath.Join(dir, "password"), []byte(c.Password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c.Config.SASL = kafkaconn.SASL{Mechanism: o.Mechanism, Username: c.User, PasswordFile: filepath.Join(dir, "password")}
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	c.Addr = cluster.ListenAddrs()[0]
	c.Config.Brokers = []string{c.Addr}
	return c
}

func randomHex(t testing.TB) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 12)
	for _, x := range b {
		out = append(out, hex[x>>4], hex[x&15])
	}
	return string(out)
}

func newCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func newLeaf(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.DNSNames = []string{name}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEM(t testing.TB, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
