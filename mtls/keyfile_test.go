package mtls_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/storegate/storegate/mtls"
	"github.com/storegate/storegate/mtls/mtlstest"
)

// TestKeyForms: keys in every form etcd and Consul read, made by the real
// openssl binary and certified by openssl x509 -req, serve as the
// gateway's identity files (FileSource) and as an upstream client
// certificate (FileClientConfig), and the two complete a mutual TLS
// handshake with each other.
func TestKeyForms(t *testing.T) {
	tests := []struct {
		form  mtlstest.KeyForm
		first string // the file's first PEM block, as openssl writes it
	}{
		{mtlstest.SEC1, "-----BEGIN EC PARAMETERS-----"},
		{mtlstest.PKCS1, "-----BEGIN RSA PRIVATE KEY-----"},
		{mtlstest.PKCS8, "-----BEGIN PRIVATE KEY-----"},
		{mtlstest.PKCS8RSA, "-----BEGIN PRIVATE KEY-----"},
	}
	ca := mtlstest.NewCA(t, "example.org")
	for _, tt := range tests {
		t.Run(string(tt.form), func(t *testing.T) {
			gw := ca.OpenSSLSVID(t, "gateway-"+string(tt.form), "/gateway", tt.form)
			client := ca.OpenSSLSVID(t, "client-"+string(tt.form), "/upstream-client", tt.form)
			raw, err := os.ReadFile(gw.Key)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(raw, []byte(tt.first)) {
				t.Fatalf("openssl wrote %.40q..., want a file starting %s", raw, tt.first)
			}
			if _, err := mtls.ParsePrivateKey(raw); err != nil {
				t.Fatalf("ParsePrivateKey: %v", err)
			}

			src := newFileSource(t, mtls.FileConfig{Cert: gw.Cert, Key: gw.Key, Bundle: ca.Bundle()}, nil)
			svid, err := src.GetX509SVID()
			if err != nil || svid.ID.String() != "spiffe://example.org/gateway" {
				t.Fatalf("FileSource SVID = %v, %v", svid, err)
			}
			var seen []string
			done := make(chan struct{}, 1)
			addr := serve(t, mtls.ServerConfig(src, trustDomains("example.org"), nil), func(cs tls.ConnectionState) {
				seen = append(seen, cs.PeerCertificates[0].URIs[0].String())
				done <- struct{}{}
			})
			cfg, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: client.Cert, Key: client.Key, CA: ca.Bundle(), ServerName: "localhost"})
			if err != nil {
				t.Fatalf("FileClientConfig: %v", err)
			}
			c, err := dial(addr, cfg)
			if err != nil {
				t.Fatalf("handshake between the openssl-made identity and client keys: %v", err)
			}
			c.Close()
			<-done
			if len(seen) != 1 || seen[0] != "spiffe://example.org/upstream-client" {
				t.Fatalf("server saw client %v", seen)
			}
			if _, err := mtls.LoadKeyPair(client.Cert, client.Key); err != nil {
				t.Fatalf("LoadKeyPair: %v", err)
			}
		})
	}
}

// TestKeyFormsRefused: an encrypted key (either of openssl's encryptions),
// a file without a key and a key that is not the certificate's are refused
// by every loader, each with an error that says what is wrong.
func TestKeyFormsRefused(t *testing.T) {
	ca := mtlstest.NewCA(t, "example.org")
	good := ca.OpenSSLSVID(t, "good", "/gateway", mtlstest.SEC1)
	other := ca.OpenSSLSVID(t, "other", "/other", mtlstest.SEC1)
	tests := []struct {
		name       string
		cert, key  string
		wantErrors []string
	}{
		{"encrypted pkcs8", "", "", []string{"encrypted", "openssl pkey"}},
		{"encrypted pkcs1", "", "", []string{"encrypted", "openssl pkey"}},
		{"certificate as key", good.Cert, good.Cert, []string{"no private key found", "EC PRIVATE KEY"}},
		{"key of another certificate", good.Cert, other.Key, []string{"does not match"}},
	}
	tests[0].cert, tests[0].key = files(ca.OpenSSLSVID(t, "enc8", "/gateway", mtlstest.EncryptedPKCS8))
	tests[1].cert, tests[1].key = files(ca.OpenSSLSVID(t, "enc1", "/gateway", mtlstest.EncryptedPKCS1))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ferr := mtls.NewFileSource(context.Background(),
				mtls.FileConfig{Cert: tt.cert, Key: tt.key, Bundle: ca.Bundle()}, slog.New(slog.DiscardHandler))
			_, lerr := mtls.LoadKeyPair(tt.cert, tt.key)
			_, cerr := mtls.FileClientConfig(mtls.ClientFiles{Cert: tt.cert, Key: tt.key})
			for name, err := range map[string]error{"NewFileSource": ferr, "LoadKeyPair": lerr, "FileClientConfig": cerr} {
				if err == nil {
					t.Errorf("%s accepted %s", name, filepath.Base(tt.key))
					continue
				}
				for _, w := range tt.wantErrors {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: error does not say %q: %v", name, w, err)
					}
				}
			}
		})
	}
}

func files(f mtlstest.Files) (string, string) { return f.Cert, f.Key }
