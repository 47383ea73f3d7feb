package conventions

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"os"
	"testing"
	"time"

	"github.com/storegate/storegate/internal/testenv"
	"github.com/storegate/storegate/mtls"
	"github.com/storegate/storegate/mtls/mtlstest"
)

// TestOpenSSLKeys: a real gateway whose identity key is the SEC1 file
// `openssl ecparam -genkey -name prime256v1` writes (EC PARAMETERS block
// first) and whose etcd client key is a PKCS#1 RSA key from `openssl genrsa
// -traditional`, both certified by `openssl x509 -req` from the test CA,
// serves etcd requests: the callers see the openssl-made certificate, and
// etcd, which requires client certificates, accepts the PKCS#1 one.
func TestOpenSSLKeys(t *testing.T) {
	env := testenv.New(t)
	pki := env.PKI("web")
	etcd := env.Etcd(testenv.EtcdSpec{PKI: pki})
	identity := mtlstest.OpenSSLSVIDIn(t, pki.Dir, "spiffe://example.org/storegate", "gateway-sec1", mtlstest.SEC1)
	client := mtlstest.OpenSSLSVIDIn(t, pki.Dir, "spiffe://example.org/storegate-upstream", "upstream-pkcs1", mtlstest.PKCS1)
	for file, first := range map[string]string{identity.Key: "EC PARAMETERS", client.Key: "RSA PRIVATE KEY"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if block, _ := pem.Decode(b); block == nil || block.Type != first {
			t.Fatalf("%s does not start with a %s block, as openssl writes it", file, first)
		}
	}

	cfg := env.GatewayConfig(pki, env.Policies(testenv.AllowAll), etcd.Endpoints, "")
	cfg.Identity.Files.Cert, cfg.Identity.Files.Key = identity.Cert, identity.Key
	cfg.Upstreams.Etcd.TLS.Cert, cfg.Upstreams.Etcd.TLS.Key = client.Cert, client.Key
	gw := env.Gateway(testenv.GatewaySpec{Bin: gatewayBin, Config: cfg})

	putGet(t, etcdThrough(t, pki, gw, "web"), "/app/openssl", "sec1 and pkcs1")

	// The gateway presents the openssl-made certificate of the SEC1 key.
	want, err := os.ReadFile(identity.Cert)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(want)
	tc, err := mtls.FileClientConfig(mtls.ClientFiles{Cert: pki.Cert("web"), Key: pki.Key("web"), CA: pki.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	tc.NextProtos = []string{"h2"}
	d := &tls.Dialer{Config: tc}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", gw.Etcd)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := conn.(*tls.Conn).ConnectionState().PeerCertificates[0].Raw; !bytes.Equal(got, block.Bytes) {
		t.Fatal("the gateway does not present the certificate of its openssl SEC1 key")
	}

	// What was written went to etcd, through the PKCS#1 client key.
	direct, err := etcd.Client("etcd")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	resp, err := direct.Get(ctx, "/app/openssl")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "sec1 and pkcs1" {
		t.Fatalf("etcd has %v, %v", resp, err)
	}
}
