package main

// A small JSON object reader that matches field names the way Consul's
// decoders do — case-insensitively, with snake_case aliases (script_args
// for ScriptArgs) — and refuses a name given twice. Decoding into structs
// with encoding/json would let {"Name":"ok","name":"BAD"} through with
// whichever value the gateway's and Consul's decoders happen to keep: a
// validator must judge exactly what the store will act on.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// errTrailing reports data after a complete object.
var errTrailing = errors.New("data after the JSON object")

// object is a JSON object's members by folded name (see fold).
type object map[string]json.RawMessage

// fold folds a field name for matching: lower case, underscores dropped.
func fold(name string) string { return strings.ReplaceAll(strings.ToLower(name), "_", "") }

// decodeObject reads raw, which must be one JSON object, into its members
// by folded name (exact names when exact is true, for maps such as Meta
// whose keys are data). A name given twice, after folding, is an error.
func decodeObject(raw []byte, exact bool) (object, error) {
	obj, err := readObject(raw, exact)
	if errors.Is(err, io.EOF) { // cut short inside the object
		err = io.ErrUnexpectedEOF
	}
	return obj, err
}

// readObject is decodeObject but for its error: a truncated object may
// show as io.EOF.
func readObject(raw []byte, exact bool) (object, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil {
		return nil, err
	} else if tok != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	obj := object{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		key := name
		if !exact {
			key = fold(name)
		}
		if _, dup := obj[key]; dup {
			return nil, fmt.Errorf("field %q appears twice", name)
		}
		obj[key] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errTrailing
	}
	return obj, nil
}

// isNull reports whether a member is absent or JSON null, which Consul
// reads alike.
func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

// str returns the string member name ("" and false when absent or null);
// shown names the member in errors.
func (o object) str(name, shown string) (string, bool, error) {
	raw := o[name]
	if isNull(raw) {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, fmt.Errorf("%s is not a string", shown)
	}
	return s, true, nil
}

// obj returns the object member name (nil when absent or null), its names
// folded unless exact; shown names the member in errors.
func (o object) obj(name, shown string, exact bool) (object, error) {
	raw := o[name]
	if isNull(raw) {
		return nil, nil
	}
	sub, err := decodeObject(raw, exact)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", shown, err)
	}
	return sub, nil
}

// list returns the elements of the array member name (nil when absent or
// null); shown names the member in errors.
func (o object) list(name, shown string) ([]json.RawMessage, error) {
	raw := o[name]
	if isNull(raw) {
		return nil, nil
	}
	var l []json.RawMessage
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, fmt.Errorf("%s is not an array", shown)
	}
	return l, nil
}
