package mtls_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/storegate/storegate/mtls"
	"github.com/storegate/storegate/mtls/mtlstest"
)

// Reload reads the files now, where no file event arrives: the files'
// directory is a symlink swapped to another directory (the watch follows
// the symlink to the old directory, which nothing touches).
func TestFileSourceReloadWithoutFileEvents(t *testing.T) {
	ca := mtlstest.NewCA(t, "example.org")
	root := t.TempDir()
	link := filepath.Join(root, "current")
	files := func(dir, name string) {
		t.Helper()
		svid := ca.SVID(t, name, "/gateway")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for from, to := range map[string]string{svid.Cert: "gateway.pem", svid.Key: "gateway-key.pem", ca.Bundle(): "bundle.pem"} {
			b, err := os.ReadFile(from)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, to), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	files(filepath.Join(root, "a"), "first")
	files(filepath.Join(root, "b"), "second")
	if err := os.Symlink("a", link); err != nil {
		t.Fatal(err)
	}
	src := newFileSource(t, mtls.FileConfig{Cert: filepath.Join(link, "gateway.pem"), Key: filepath.Join(link, "gateway-key.pem"),
		Bundle: filepath.Join(link, "bundle.pem")}, nil)
	serial := func() string {
		svid, err := src.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		return svid.Certificates[0].SerialNumber.String()
	}
	first := serial()
	if err := os.Symlink("b", link+".new"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link+".new", link); err != nil {
		t.Fatal(err)
	}
	if err := src.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if serial() == first {
		t.Fatal("Reload kept the SVID of the directory the link left")
	}
	src.Close()
	if err := src.Reload(context.Background()); err == nil {
		t.Error("Reload of a closed source succeeded")
	}
}
