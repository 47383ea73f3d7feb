package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/storegate/storegate/plugins/sdk"
)

// config is the plugin's configuration:
// {"rules":[{"prefix":"/config/","schema":{...}}]}.
type config struct {
	Rules []struct {
		Prefix string          `json:"prefix"`
		Schema json.RawMessage `json:"schema"`
	} `json:"rules"`
}

// rule is one compiled rule: values under prefix must match schema.
type rule struct {
	prefix []byte
	schema *jsonschema.Schema
}

// rules are the compiled rules of this instance, set once by configure.
var rules []rule

// configure is the plugin's Init: it compiles every rule's schema, so a
// bad schema refuses the plugin at load rather than at the first write.
func configure(raw []byte) error {
	compiled, err := parseConfig(raw)
	if err != nil {
		return err
	}
	rules = compiled
	sdk.Log(sdk.LevelInfo, "schema: "+strconv.Itoa(len(rules))+" rules loaded")
	return nil
}

// parseConfig decodes the configuration strictly (an unknown field is an
// error, to catch typos) and compiles each schema. Schemas without
// "$schema" are read as draft 2020-12; "$ref"s to other documents are not
// loaded (a plugin has no files or network), so a schema must be self
// contained.
func parseConfig(raw []byte) ([]rule, error) {
	var cfg config
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("schema: config: %w", err)
	}
	out := make([]rule, 0, len(cfg.Rules))
	for i, r := range cfg.Rules {
		if r.Prefix == "" {
			return nil, fmt.Errorf("schema: rule %d: prefix is empty (\"/\" selects every key)", i)
		}
		if len(r.Schema) == 0 {
			return nil, fmt.Errorf("schema: rule %d (%s): no schema", i, r.Prefix)
		}
		sch, err := compile(i, r.Schema)
		if err != nil {
			return nil, fmt.Errorf("schema: rule %d (%s): %w", i, r.Prefix, err)
		}
		out = append(out, rule{prefix: []byte(r.Prefix), schema: sch})
	}
	return out, nil
}

// compile compiles one schema document, named by its rule's index.
func compile(i int, doc json.RawMessage) (*jsonschema.Schema, error) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noLoader{})
	url := fmt.Sprintf("urn:storegate:schema:rule%d", i)
	if err := c.AddResource(url, v); err != nil {
		return nil, err
	}
	return c.Compile(url)
}

// noLoader refuses to load any schema the configuration does not hold.
type noLoader struct{}

// errExternal says why a remote or file "$ref" fails.
var errExternal = errors.New("schemas are not loaded from files or the network: inline them")

// Load refuses every URL.
func (noLoader) Load(url string) (any, error) { return nil, fmt.Errorf("%s: %w", url, errExternal) }
