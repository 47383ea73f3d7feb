package main

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/storegate/storegate/plugins/sdk"
)

// checkService judges a service registration: Consul's agent form
// (api.AgentServiceRegistration: Name, Meta, Check, Checks,
// Connect.SidecarService) or its catalog form (api.CatalogRegistration:
// Service{Service, Meta}, Check, Checks). The envelope does not say which
// endpoint the body goes to, so a body holding both a top-level Name and a
// Service object has both judged, and a body naming no service is refused.
// owner is what Meta.owner must equal.
func checkService(body []byte, owner string) error {
	top, err := decodeObject(body, false)
	if err != nil {
		return fmt.Errorf("registration is not a JSON object: %w", err)
	}
	named := false
	if _, ok, err := top.str("name", "Name"); err != nil {
		return err
	} else if ok {
		if err := checkDefinition(top, "name", "Name", "", owner); err != nil {
			return err
		}
		named = true
	}
	svc, err := top.obj("service", "Service", false)
	if err != nil {
		return err
	}
	if svc != nil {
		if err := checkDefinition(svc, "service", "Service.Service", "Service.", owner); err != nil {
			return err
		}
		named = true
	}
	if !named {
		return errors.New("registration names no service (Name, or Service.Service)")
	}
	return checkScripts(top, "")
}

// checkDefinition judges one service definition: its name (member
// nameField, shown as field in reasons) against the pattern and its
// Meta.owner against owner. where prefixes Meta in reasons.
func checkDefinition(def object, nameField, field, where, owner string) error {
	name, ok, err := def.str(nameField, field)
	if err != nil {
		return err
	}
	if !ok || name == "" {
		return fmt.Errorf("%s is missing", field)
	}
	if !namePattern.MatchString(name) {
		return fmt.Errorf("service name %q does not match %s", name, namePattern)
	}
	meta, err := def.obj("meta", where+"Meta", true)
	if err != nil {
		return err
	}
	got, ok, err := meta.str("owner", where+"Meta.owner")
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("service %q has no %sMeta.owner (want %q, %s)", name, where, owner, ownerWhat())
	}
	if got != owner {
		return fmt.Errorf("service %q: %sMeta.owner is %q, want %q (%s)", name, where, got, owner, ownerWhat())
	}
	return nil
}

// checkScripts refuses script checks in a registration's Check and Checks,
// and in those of its Connect.SidecarService, which Consul registers with
// it. where prefixes field names in reasons.
func checkScripts(def object, where string) error {
	if chk, err := def.obj("check", where+"Check", false); err != nil {
		return err
	} else if chk != nil {
		if err := checkCheck(chk, where+"Check"); err != nil {
			return err
		}
	}
	checks, err := def.list("checks", where+"Checks")
	if err != nil {
		return err
	}
	for i, raw := range checks {
		chk, err := decodeObject(raw, false)
		if err != nil {
			return fmt.Errorf("%sChecks[%d]: %w", where, i, err)
		}
		if err := checkCheck(chk, where+"Checks["+strconv.Itoa(i)+"]"); err != nil {
			return err
		}
	}
	connect, err := def.obj("connect", where+"Connect", false)
	if err != nil || connect == nil {
		return err
	}
	sidecar, err := connect.obj("sidecarservice", where+"Connect.SidecarService", false)
	if err != nil || sidecar == nil {
		return err
	}
	return checkScripts(sidecar, where+"Connect.SidecarService.")
}

// checkCheck refuses a check that runs a command: Args or ScriptArgs (any
// case, script_args too) non-empty, as script and Docker checks have.
// field names the check in the reason.
func checkCheck(chk object, field string) error {
	for _, member := range [...]struct{ folded, shown string }{{"args", "Args"}, {"scriptargs", "ScriptArgs"}} {
		args, err := chk.list(member.folded, field+"."+member.shown)
		if err != nil {
			return err
		}
		if len(args) > 0 {
			name, _, _ := chk.str("name", field+".Name")
			return fmt.Errorf("%s (%q) is a script check (%s): script checks are not allowed", field, name, member.shown)
		}
	}
	return nil
}

// checkCheckRegistration judges a check registration
// (api.AgentCheckRegistration): the check itself must not run a script.
func checkCheckRegistration(body []byte) error {
	chk, err := decodeObject(body, false)
	if err != nil {
		return fmt.Errorf("registration is not a JSON object: %w", err)
	}
	return checkCheck(chk, "check")
}

// expectedOwner is what Meta.owner must equal for caller, per the owner
// mode; ok is false when the caller's SPIFFE ID has no last segment.
func expectedOwner(caller []byte) (string, bool) {
	if ownerMode == ownerSPIFFEID {
		return string(caller), len(caller) > 0
	}
	seg, ok := sdk.LastPathSegment(caller)
	return string(seg), ok
}

// ownerWhat explains the owner mode in reasons.
func ownerWhat() string {
	if ownerMode == ownerSPIFFEID {
		return "the caller's SPIFFE ID"
	}
	return "the caller's SPIFFE ID's last path segment"
}
