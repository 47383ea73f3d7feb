package mtlstest

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/storegate/storegate/mtls"
)

// KeyForm is a private key file as the openssl binary writes it.
type KeyForm string

// The forms etcd and Consul read, and two encrypted ones the gateway must
// refuse clearly.
const (
	// SEC1 is `openssl ecparam -genkey -name prime256v1`: an
	// "EC PARAMETERS" block, then "EC PRIVATE KEY".
	SEC1 KeyForm = "sec1"
	// PKCS1 is `openssl genrsa -traditional 2048`: "RSA PRIVATE KEY".
	PKCS1 KeyForm = "pkcs1"
	// PKCS8 is `openssl genpkey -algorithm EC`: "PRIVATE KEY".
	PKCS8 KeyForm = "pkcs8"
	// PKCS8RSA is `openssl genpkey -algorithm RSA`: "PRIVATE KEY".
	PKCS8RSA KeyForm = "pkcs8-rsa"
	// EncryptedPKCS8 is `openssl genpkey -aes-256-cbc`:
	// "ENCRYPTED PRIVATE KEY".
	EncryptedPKCS8 KeyForm = "encrypted-pkcs8"
	// EncryptedPKCS1 is `openssl genrsa -traditional -aes256`: an
	// "RSA PRIVATE KEY" with a DEK-Info header.
	EncryptedPKCS1 KeyForm = "encrypted-pkcs1"
)

// passphrase protects the encrypted forms.
const passphrase = "pass:storegate-test"

// keyCommands are the openssl arguments that write a key of each form to
// the file named last.
var keyCommands = map[KeyForm][]string{
	SEC1:           {"ecparam", "-genkey", "-name", "prime256v1", "-out"},
	PKCS1:          {"genrsa", "-traditional", "-out"}, // the size follows the file
	PKCS8:          {"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"},
	PKCS8RSA:       {"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"},
	EncryptedPKCS8: {"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes-256-cbc", "-pass", passphrase, "-out"},
	EncryptedPKCS1: {"genrsa", "-traditional", "-aes256", "-passout", passphrase, "-out"},
}

// OpenSSL is the openssl binary on $PATH; the test fails without it (it is
// Debian's openssl package).
func OpenSSL(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		tb.Fatalf("openssl not found (install Debian's openssl package): %v", err)
	}
	return bin
}

// OpenSSLSVID makes an X.509-SVID for the ID with path entirely with the
// openssl binary: a key of form written to <name>-key.pem, a request for
// it, and a certificate signed by the CA (openssl x509 -req with the
// SPIFFE ID as the only URI SAN, the loopback names, digitalSignature,
// serverAuth and clientAuth) written to <name>.pem.
func (ca *CA) OpenSSLSVID(tb testing.TB, name, path string, form KeyForm) Files {
	tb.Helper()
	return OpenSSLSVIDIn(tb, ca.Dir, ca.ID(path).String(), name, form)
}

// OpenSSLSVIDIn is OpenSSLSVID for the mtls dev CA in dir (ca.pem and
// ca-key.pem, as mtls.InitCA writes them), e.g. a testenv.PKI's.
func OpenSSLSVIDIn(tb testing.TB, dir, spiffeID, name string, form KeyForm) Files {
	tb.Helper()
	bin := OpenSSL(tb)
	args, ok := keyCommands[form]
	if !ok {
		tb.Fatalf("mtlstest: unknown key form %q", form)
	}
	f := Files{Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
	run := func(args ...string) {
		tb.Helper()
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			tb.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	args = append(append([]string(nil), args...), f.Key)
	if form == PKCS1 || form == EncryptedPKCS1 {
		args = append(args, "2048")
	}
	run(args...)
	if err := os.Chmod(f.Key, 0o600); err != nil {
		tb.Fatal(err)
	}
	csr := filepath.Join(tb.TempDir(), name+".csr")
	run("req", "-new", "-key", f.Key, "-passin", passphrase, "-subj", "/O=storegate test", "-out", csr)
	ext := filepath.Join(tb.TempDir(), name+".ext")
	if err := os.WriteFile(ext, []byte(fmt.Sprintf(`[svid]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = URI:%s, DNS:localhost, IP:127.0.0.1, IP:::1
`, spiffeID)), 0o644); err != nil {
		tb.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		tb.Fatal(err)
	}
	run("x509", "-req", "-in", csr, "-CA", filepath.Join(dir, mtls.CACertFile), "-CAkey", filepath.Join(dir, mtls.CAKeyFile),
		"-set_serial", "0x"+serial.Text(16), "-days", "1", "-extfile", ext, "-extensions", "svid", "-out", f.Cert)
	return f
}
