package testserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// Cert is a self-signed certificate for 127.0.0.1 and localhost that is
// its own CA.
type Cert struct {
	CertFile string         // the certificate, PEM (e.g. for SSL_CERT_FILE)
	KeyFile  string         // its private key, PEM (PKCS #8)
	Pool     *x509.CertPool // a pool that trusts the certificate
	TLS      tls.Certificate
}

// SelfSignedCert makes a Cert and writes its files to dir.
func SelfSignedCert(t testing.TB, dir string) *Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "repo test server"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cert{
		CertFile: filepath.Join(dir, "cert.pem"),
		KeyFile:  filepath.Join(dir, "key.pem"),
		Pool:     x509.NewCertPool(),
		TLS:      tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert},
	}
	if err := os.WriteFile(c.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Pool.AddCert(cert)
	return c
}

// S3Options are what StartS3 can vary.
type S3Options struct {
	// Wrap, when set, wraps gofakes3's handler (to watch requests).
	Wrap func(http.Handler) http.Handler
}

// S3 is gofakes3 with in-memory storage, served over TLS on 127.0.0.1
// with a self-signed certificate. The storage outlives Stop and Restart.
type S3 struct {
	Endpoint string // 127.0.0.1:port
	CertFile string // the server's certificate, PEM (e.g. for SSL_CERT_FILE)
	Cert     *Cert

	handler http.Handler
	run     running
}

// StartS3 starts gofakes3 for t and stops it at t's end.
func StartS3(t testing.TB, opts S3Options) *S3 {
	t.Helper()
	s := &S3{Cert: SelfSignedCert(t, t.TempDir())}
	s.CertFile = s.Cert.CertFile
	faker := gofakes3.New(s3mem.New(), gofakes3.WithLogger(gofakes3.DiscardLog()))
	s.handler = faker.Server()
	if opts.Wrap != nil {
		s.handler = opts.Wrap(s.handler)
	}
	var err error
	for range 3 {
		s.Endpoint = "127.0.0.1:" + FreePort(t)
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		Unavailable(t, "gofakes3: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

func (s *S3) start() error {
	ln, err := net.Listen("tcp", s.Endpoint)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:   s.handler,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{s.Cert.TLS}},
		// Quiet: clients that drop connections make TLS handshake
		// errors, which are not a test's business.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ServeTLS(ln, "", "")
	}()
	s.run.set(func() { _ = srv.Close() }, done, 0)
	return nil
}

// Stop closes the listener and every connection at once.
func (s *S3) Stop() { s.run.stop() }

// Restart serves the same storage again on the same port.
func (s *S3) Restart(t testing.TB) {
	t.Helper()
	restart(t, "gofakes3", s.start)
}
