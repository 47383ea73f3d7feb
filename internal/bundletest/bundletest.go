// Package bundletest rewrites OPA bundle tarballs for tests: changing a
// signed bundle after it was signed is how the tests prove that a replica
// refuses it.
package bundletest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
)

// File is a file Rewrite appends to a bundle.
type File struct {
	Name    string
	Content []byte
}

// Rewrite rewrites a bundle's gzipped tarball: edit sees every file (nil
// edit: each is kept as it is) and returns its new content, or nil to leave
// it out; add are appended.
func Rewrite(raw []byte, edit func(name string, content []byte) []byte, add ...File) ([]byte, error) {
	gz, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("bundletest: %w", err)
	}
	tr := tar.NewReader(gz)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	write := func(h *tar.Header, content []byte) error {
		h.Size = int64(len(content))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(content)
		return err
	}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("bundletest: %w", err)
		}
		content, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("bundletest: %w", err)
		}
		if edit != nil {
			if content = edit(h.Name, content); content == nil {
				continue
			}
		}
		if err := write(h, content); err != nil {
			return nil, fmt.Errorf("bundletest: %w", err)
		}
	}
	for _, f := range add {
		if err := write(&tar.Header{Name: f.Name, Mode: 0o644, Typeflag: tar.TypeReg}, f.Content); err != nil {
			return nil, fmt.Errorf("bundletest: %w", err)
		}
	}
	if err := errors.Join(tw.Close(), zw.Close()); err != nil {
		return nil, fmt.Errorf("bundletest: %w", err)
	}
	return out.Bytes(), nil
}
