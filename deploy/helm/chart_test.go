package helm

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/storegate/storegate/config"
	"github.com/storegate/storegate/gate"
	"github.com/storegate/storegate/policy"
)

// The release every test renders.
const (
	releaseName = "sg"
	namespace   = "storegate"
	fullname    = "sg-storegate"
	chartDir    = "storegate"
)

var (
	repoRoot string // the repository, two directories up
	helmBin  string // repoRoot/bin/helm, built from tools/helm when missing
)

func TestMain(m *testing.M) {
	if err := setup(); err != nil {
		fmt.Fprintln(os.Stderr, "deploy/helm:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// setup finds the repository and builds bin/helm if it is missing (the
// Makefile's `helm` target does the same): a missing tool is built, never a
// reason to skip.
func setup() error {
	var err error
	if repoRoot, err = filepath.Abs("../.."); err != nil {
		return err
	}
	helmBin = filepath.Join(repoRoot, "bin", "helm")
	if _, err := os.Stat(helmBin); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("building helm: %w", err)
	}
	cmd := exec.Command(goBin, "build", "-o", helmBin, "helm.sh/helm/v4/cmd/helm")
	cmd.Dir = filepath.Join(repoRoot, "tools", "helm")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building helm (cd tools/helm && go build -o ../../bin/helm helm.sh/helm/v4/cmd/helm): %w", err)
	}
	fmt.Fprintf(os.Stderr, "built %s in %v\n", helmBin, time.Since(start).Round(time.Second))
	return nil
}

// helm runs the helm binary with its homes in a temporary directory, so
// nothing of the user's Helm configuration takes part.
func helm(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(helmBin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// render runs `helm template` for the value file (and extra flags) and
// decodes what it prints.
func render(t *testing.T, valuesFile string, extra ...string) *release {
	t.Helper()
	args := append([]string{"template", releaseName, chartDir, "--namespace", namespace, "-f", valuesFile}, extra...)
	out, stderr, err := helm(t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	r, err := decodeStream([]byte(out))
	if err != nil {
		t.Fatalf("helm template -f %s: %v\n%s", valuesFile, err, out)
	}
	return r
}

// release is a rendered release, every object decoded into its type.
type release struct {
	objects        []object
	deployment     *appsv1.Deployment
	service        *corev1.Service
	serviceAccount *corev1.ServiceAccount
	configMaps     map[string]*corev1.ConfigMap
	pdb            *policyv1.PodDisruptionBudget
	hpa            *autoscalingv2.HorizontalPodAutoscaler
}

// object is one decoded object and its metadata.
type object struct {
	kind string // "apps/v1 Deployment"
	meta *metav1.ObjectMeta
	obj  any
}

// kinds are the objects the chart may render; any other kind is an error.
var kinds = map[string]func() (any, *metav1.ObjectMeta){
	"v1 ConfigMap":      func() (any, *metav1.ObjectMeta) { o := new(corev1.ConfigMap); return o, &o.ObjectMeta },
	"v1 Service":        func() (any, *metav1.ObjectMeta) { o := new(corev1.Service); return o, &o.ObjectMeta },
	"v1 ServiceAccount": func() (any, *metav1.ObjectMeta) { o := new(corev1.ServiceAccount); return o, &o.ObjectMeta },
	"apps/v1 Deployment": func() (any, *metav1.ObjectMeta) {
		o := new(appsv1.Deployment)
		return o, &o.ObjectMeta
	},
	"policy/v1 PodDisruptionBudget": func() (any, *metav1.ObjectMeta) {
		o := new(policyv1.PodDisruptionBudget)
		return o, &o.ObjectMeta
	},
	"autoscaling/v2 HorizontalPodAutoscaler": func() (any, *metav1.ObjectMeta) {
		o := new(autoscalingv2.HorizontalPodAutoscaler)
		return o, &o.ObjectMeta
	},
}

// decodeStream splits a multi-document YAML stream and decodes each object
// strictly into its k8s.io/api type, as the API server's strict field
// validation does: unknown fields, fields in the wrong case, duplicate keys
// and unknown kinds are errors.
func decodeStream(stream []byte) (*release, error) {
	r := &release{configMaps: map[string]*corev1.ConfigMap{}}
	docs := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for i := 0; ; i++ {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if string(bytes.TrimSpace(j)) == "null" { // only comments
			continue
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(j, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		kind := tm.APIVersion + " " + tm.Kind
		newObj, ok := kinds[kind]
		if !ok {
			return nil, fmt.Errorf("document %d: unknown kind %q", i, kind)
		}
		obj, meta := newObj()
		strict, err := sjson.UnmarshalStrict(j, obj, sjson.DisallowUnknownFields)
		if err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, kind, err)
		}
		if len(strict) > 0 {
			return nil, fmt.Errorf("document %d (%s): %w", i, kind, errors.Join(strict...))
		}
		r.objects = append(r.objects, object{kind: kind, meta: meta, obj: obj})
		dup := func(have bool) error {
			if have {
				return fmt.Errorf("document %d: a second %s (%s)", i, kind, meta.Name)
			}
			return nil
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			err, r.deployment = dup(r.deployment != nil), o
		case *corev1.Service:
			err, r.service = dup(r.service != nil), o
		case *corev1.ServiceAccount:
			err, r.serviceAccount = dup(r.serviceAccount != nil), o
		case *policyv1.PodDisruptionBudget:
			err, r.pdb = dup(r.pdb != nil), o
		case *autoscalingv2.HorizontalPodAutoscaler:
			err, r.hpa = dup(r.hpa != nil), o
		case *corev1.ConfigMap:
			err = dup(r.configMaps[o.Name] != nil)
			r.configMaps[o.Name] = o
		}
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}

// TestStrictDecoding shows the decoder refuses what the API server's strict
// validation refuses, so that a chart rendering such a thing fails here.
func TestStrictDecoding(t *testing.T) {
	const deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"
	for name, doc := range map[string]string{
		"unknown-field":     deployment + "spec: {replica: 3}\n",
		"field-in-bad-case": deployment + "spec: {Replicas: 3}\n",
		"duplicate-key":     deployment + "spec: {replicas: 3, replicas: 4}\n",
		"unknown-kind":      "apiVersion: v1\nkind: Sekret\nmetadata: {name: x}\n",
		"old-api-version":   "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata: {name: x}\n",
		"wrong-type":        deployment + "spec: {replicas: three}\n",
		"second-deployment": deployment + "---\n" + deployment,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeStream([]byte(doc)); err == nil {
				t.Fatalf("decoded:\n%s", doc)
			}
		})
	}
	if r, err := decodeStream([]byte("# only a comment\n---\n" + deployment + "spec: {replicas: 3}\n")); err != nil || *r.deployment.Spec.Replicas != 3 {
		t.Fatalf("a valid stream: %v", err)
	}
}

// valueSet is one of testdata's value files and what its release must be.
type valueSet struct {
	file string
	// replicas is the Deployment's replica count; nil with an HPA.
	replicas *int32
	// hpa is the autoscaler's [min, max]; nil: no HPA.
	hpa *[2]int32
	pdb bool
	// fronts are the container's front ports besides admin.
	fronts []string
	// socket is the Workload API volume: "csi" or "hostPath", its
	// directory in the container and the config's workload_api.
	socket, socketDir, workloadAPI string
	// bundleURL is set for bundle policy; else the policy is a ConfigMap,
	// and decisions are asked of it.
	bundleURL string
	decisions []decision
}

// decision is an op put to the rendered policy, loaded by the real engine.
type decision struct {
	caller string
	action gate.Action
	key    string
	want   gate.Effect
}

func ptr[T any](v T) *T { return &v }

const csiDir, csiSocket = "/spiffe-workload-api", "unix:///spiffe-workload-api/spire-agent.sock"

// denyAll are decisions every release without intentions must make: none
// allows anything (fail closed), operators included.
var denyAll = []decision{
	{caller: "spiffe://example.org/admin", action: gate.ActionRead, key: "/app/x", want: gate.Deny},
	{caller: "spiffe://example.org/web", action: gate.ActionWrite, key: "/app/x", want: gate.Deny},
}

var valueSets = []valueSet{
	{file: "default.yaml", replicas: ptr[int32](1), fronts: []string{"etcd"},
		socket: "csi", socketDir: csiDir, workloadAPI: csiSocket, decisions: denyAll},
	{file: "replicas-3.yaml", replicas: ptr[int32](3), pdb: true, fronts: []string{"etcd"},
		socket: "csi", socketDir: csiDir, workloadAPI: csiSocket, decisions: denyAll},
	{file: "hpa.yaml", hpa: &[2]int32{3, 10}, pdb: true, fronts: []string{"etcd"},
		socket: "csi", socketDir: csiDir, workloadAPI: csiSocket, decisions: denyAll},
	{file: "policy-bundle.yaml", replicas: ptr[int32](2), pdb: true, fronts: []string{"etcd"},
		socket: "csi", socketDir: csiDir, workloadAPI: csiSocket,
		bundleURL: "https://bundles.example.org/storegate/bundle.tar.gz"},
	{file: "policy-configmap.yaml", replicas: ptr[int32](1), fronts: []string{"etcd"},
		socket: "csi", socketDir: csiDir, workloadAPI: csiSocket, decisions: []decision{
			{caller: "spiffe://example.org/web", action: gate.ActionWrite, key: "/app/greeting", want: gate.Allow},
			{caller: "spiffe://example.org/web", action: gate.ActionRead, key: "/app/greeting", want: gate.Allow},
			{caller: "spiffe://example.org/web", action: gate.ActionWrite, key: "/app/secret/token", want: gate.Deny},
			{caller: "spiffe://example.org/web", action: gate.ActionWrite, key: "/other", want: gate.Deny},
			{caller: "spiffe://partner.example.com/web", action: gate.ActionRead, key: "/app/greeting", want: gate.Deny},
		}},
	{file: "socket-hostpath.yaml", replicas: ptr[int32](1), fronts: []string{"etcd"},
		socket: "hostPath", socketDir: "/run/spire/sockets", workloadAPI: "unix:///run/spire/sockets/agent.sock", decisions: denyAll},
	{file: "socket-csi.yaml", replicas: ptr[int32](1), fronts: []string{"etcd"},
		socket: "csi", socketDir: csiDir, workloadAPI: csiSocket, decisions: denyAll},
	{file: "both-fronts.yaml", replicas: ptr[int32](2), pdb: true, fronts: []string{"etcd", "consul"},
		socket: "csi", socketDir: csiDir, workloadAPI: csiSocket, decisions: denyAll},
	{file: "consul-only.yaml", replicas: ptr[int32](1), fronts: []string{"consul"},
		socket: "csi", socketDir: csiDir, workloadAPI: csiSocket, decisions: denyAll},
}

// TestValueSetsAreTested keeps the table and testdata in step: a value file
// nobody checks is a value file that may rot.
func TestValueSetsAreTested(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var tested []string
	for _, vs := range valueSets {
		tested = append(tested, filepath.Join("testdata", vs.file))
	}
	slices.Sort(tested)
	if !slices.Equal(files, tested) {
		t.Fatalf("testdata holds %v, the table tests %v", files, tested)
	}
}

// TestLint runs `helm lint --strict` with every value set: the chart's
// templates, Chart.yaml and values.schema.json.
func TestLint(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.file, func(t *testing.T) {
			out, stderr, err := helm(t, "lint", "--strict", chartDir, "-f", filepath.Join("testdata", vs.file))
			if err != nil || !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm lint --strict: %v\n%s%s", err, out, stderr)
			}
		})
	}
}

// TestTemplate renders every value set and checks the release it makes.
func TestTemplate(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.file, func(t *testing.T) {
			r := render(t, filepath.Join("testdata", vs.file))
			checkRelease(t, r, vs)
		})
	}
}

func checkRelease(t *testing.T, r *release, vs valueSet) {
	t.Helper()
	if r.deployment == nil || r.service == nil || r.serviceAccount == nil {
		t.Fatalf("want a Deployment, a Service and a ServiceAccount; got %v", r.kinds())
	}
	checkLabels(t, r)
	dep := r.deployment
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]

	// The config file: one the gateway accepts, and the one the pods run.
	cm := r.configMaps[fullname]
	if cm == nil {
		t.Fatalf("no ConfigMap %s (the config file); got %v", fullname, r.kinds())
	}
	file, ok := cm.Data["storegate.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no storegate.yaml: %v", fullname, cm.Data)
	}
	cfg, err := config.Parse([]byte(file))
	if err != nil {
		t.Fatalf("config.Parse of the rendered config: %v\n%s", err, file)
	}
	sum := sha256.Sum256([]byte(strings.TrimSuffix(file, "\n")))
	if got := dep.Spec.Template.Annotations["checksum/config"]; got != hex.EncodeToString(sum[:]) {
		t.Errorf("checksum/config is %q, the config file's sha256 is %x", got, sum)
	}
	configDir := mountOf(t, c, volumeOf(t, pod, func(v corev1.Volume) bool {
		return v.ConfigMap != nil && v.ConfigMap.Name == fullname
	}).Name).MountPath
	if want := []string{"serve", "--config", path.Join(configDir, "storegate.yaml")}; !slices.Equal(c.Args, want) {
		t.Errorf("args %q, want %q", c.Args, want)
	}

	// Ports: the config's listeners are the container's ports, and the
	// Service reaches each of them.
	listen := map[string]string{"admin": cfg.Listen.Admin, "etcd": cfg.Listen.Etcd, "consul": cfg.Listen.Consul}
	var names []string
	for _, p := range c.Ports {
		names = append(names, p.Name)
		if got := listenPort(t, listen[p.Name]); got != p.ContainerPort || p.Protocol != corev1.ProtocolTCP {
			t.Errorf("container port %s is %d/%s, listen.%s is %q", p.Name, p.ContainerPort, p.Protocol, p.Name, listen[p.Name])
		}
	}
	if want := append(slices.Clone(vs.fronts), "admin"); !sameSet(names, want) {
		t.Errorf("container ports %v, want %v", names, want)
	}
	for name, addr := range listen {
		if addr != "" && !slices.Contains(names, name) {
			t.Errorf("listen.%s is %q but the container has no %s port", name, addr, name)
		}
	}
	var svcNames []string
	for _, sp := range r.service.Spec.Ports {
		svcNames = append(svcNames, sp.Name)
		if got := resolvePort(t, c, sp.TargetPort); got != listenPort(t, listen[sp.Name]) {
			t.Errorf("Service port %s targets %d, listen.%s is %q", sp.Name, got, sp.Name, listen[sp.Name])
		}
	}
	if !sameSet(svcNames, names) {
		t.Errorf("Service ports %v, container ports %v", svcNames, names)
	}
	if !maps.Equal(r.service.Spec.Selector, dep.Spec.Selector.MatchLabels) {
		t.Errorf("Service selector %v, Deployment selector %v", r.service.Spec.Selector, dep.Spec.Selector.MatchLabels)
	}
	if cfg.Listen.Etcd != "" {
		// MemberList hands these to etcd clients: they must lead to the Service.
		for _, a := range cfg.Listen.EtcdAdvertise {
			u, err := url.Parse(a)
			if err != nil {
				t.Fatal(err)
			}
			if want := fullname + "." + namespace + ".svc"; u.Hostname() != want || portNumber(t, u.Port()) != servicePort(t, r.service, "etcd") {
				t.Errorf("listen.etcd_advertise %q: want https://%s:%d, the Service", a, want, servicePort(t, r.service, "etcd"))
			}
		}
	}

	// Probes: plain HTTP on the admin port.
	adminPort := listenPort(t, cfg.Listen.Admin)
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}, {"startup", c.StartupProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no %s HTTP probe", p.name)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || resolvePort(t, c, g.Port) != adminPort || (g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP) {
			t.Errorf("%s probe %s %v %s, want %s on the admin port %d over HTTP", p.name, g.Path, g.Port.String(), g.Scheme, p.path, adminPort)
		}
	}

	// Stopping: a preStop sleep (no shell), then SIGTERM and the gateway's
	// drain, all within the grace period.
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Fatalf("no preStop sleep: %+v", c.Lifecycle)
	}
	if c.Lifecycle.PreStop.Exec != nil || c.Lifecycle.PreStop.HTTPGet != nil {
		t.Errorf("preStop must be the sleep action alone (no shell in the image): %+v", c.Lifecycle.PreStop)
	}
	sleep := c.Lifecycle.PreStop.Sleep.Seconds
	drain := int64(time.Duration(cfg.Drain.Timeout) / time.Second)
	if sleep <= 0 || drain <= 0 {
		t.Errorf("preStop sleep %ds, drain.timeout %v: both must be positive", sleep, time.Duration(cfg.Drain.Timeout))
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g <= sleep+drain {
		t.Errorf("terminationGracePeriodSeconds %s is not above the preStop sleep %ds + drain.timeout %ds", fmtPtr(g), sleep, drain)
	}
	if s := dep.Spec.Strategy.RollingUpdate; s == nil || s.MaxUnavailable == nil || s.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update %+v: a roll-out must not take a replica down before its successor is ready", s)
	}

	// Replicas, the autoscaler and the disruption budget.
	switch {
	case vs.hpa != nil:
		if dep.Spec.Replicas != nil {
			t.Errorf("with an HPA the Deployment must leave replicas to it, has %d", *dep.Spec.Replicas)
		}
		h := r.hpa
		if h == nil {
			t.Fatalf("no HorizontalPodAutoscaler; got %v", r.kinds())
		}
		ref := h.Spec.ScaleTargetRef
		if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != dep.Name {
			t.Errorf("HPA targets %+v, want the Deployment %s", ref, dep.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas != vs.hpa[0] || h.Spec.MaxReplicas != vs.hpa[1] {
			t.Errorf("HPA %v–%d, want %v", h.Spec.MinReplicas, h.Spec.MaxReplicas, *vs.hpa)
		}
		for _, m := range h.Spec.Metrics {
			if m.Type != autoscalingv2.ResourceMetricSourceType || m.Resource == nil || m.Resource.Target.AverageUtilization == nil {
				t.Errorf("HPA metric %+v: want resource utilization", m)
			} else if _, ok := c.Resources.Requests[m.Resource.Name]; !ok {
				t.Errorf("HPA scales on %s utilization, but the container requests no %s", m.Resource.Name, m.Resource.Name)
			}
		}
		if len(h.Spec.Metrics) == 0 {
			t.Error("HPA without metrics")
		}
	default:
		if r.hpa != nil {
			t.Errorf("an HPA without autoscaling")
		}
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas != *vs.replicas {
			t.Errorf("replicas %v, want %d", dep.Spec.Replicas, *vs.replicas)
		}
	}
	if (r.pdb != nil) != vs.pdb {
		t.Errorf("PodDisruptionBudget rendered: %v, want %v", r.pdb != nil, vs.pdb)
	}
	if r.pdb != nil {
		if r.pdb.Spec.MaxUnavailable == nil || r.pdb.Spec.MaxUnavailable.IntValue() != 1 || r.pdb.Spec.MinAvailable != nil {
			t.Errorf("PDB %+v: want maxUnavailable 1", r.pdb.Spec)
		}
		if r.pdb.Spec.Selector == nil || !maps.Equal(r.pdb.Spec.Selector.MatchLabels, dep.Spec.Selector.MatchLabels) {
			t.Errorf("PDB selector %v, Deployment selector %v", r.pdb.Spec.Selector, dep.Spec.Selector.MatchLabels)
		}
	}

	// The Workload API socket.
	if cfg.Identity.WorkloadAPI != vs.workloadAPI || cfg.Identity.Files != nil {
		t.Errorf("identity.workload_api %q (files %v), want %q", cfg.Identity.WorkloadAPI, cfg.Identity.Files, vs.workloadAPI)
	}
	if u, err := url.Parse(cfg.Identity.WorkloadAPI); err != nil || u.Scheme != "unix" || path.Dir(u.Path) != vs.socketDir {
		t.Errorf("identity.workload_api %q is not a socket in %s", cfg.Identity.WorkloadAPI, vs.socketDir)
	}
	sock := mountAt(t, c, vs.socketDir)
	if !sock.ReadOnly {
		t.Errorf("the Workload API mount %s is writable", sock.MountPath)
	}
	sv := volumeOf(t, pod, func(v corev1.Volume) bool { return v.Name == sock.Name })
	switch vs.socket {
	case "csi":
		if sv.CSI == nil || sv.CSI.Driver != "csi.spiffe.io" || sv.CSI.ReadOnly == nil || !*sv.CSI.ReadOnly || sv.HostPath != nil {
			t.Errorf("socket volume %+v: want the read-only csi.spiffe.io CSI volume", sv.VolumeSource)
		}
	case "hostPath":
		if sv.HostPath == nil || sv.HostPath.Path != "/run/spire/sockets" || sv.HostPath.Type == nil ||
			*sv.HostPath.Type != corev1.HostPathDirectory || sv.CSI != nil {
			t.Errorf("socket volume %+v: want the hostPath directory /run/spire/sockets", sv.VolumeSource)
		}
	default:
		t.Fatalf("unknown socket kind %q", vs.socket)
	}

	checkSecurity(t, r, c)
	checkVolumes(t, r, c)
	checkFiles(t, pod, c, cfg)
	checkPolicy(t, r, c, cfg, vs)
}

// checkSecurity: non-root, read-only root, no capabilities, no privilege
// escalation, the runtime's seccomp profile, no API token, sized requests.
func checkSecurity(t *testing.T, r *release, c corev1.Container) {
	t.Helper()
	pod := r.deployment.Spec.Template.Spec
	psc, sc := pod.SecurityContext, c.SecurityContext
	if psc == nil || sc == nil {
		t.Fatalf("pod securityContext %v, container securityContext %v: both are required", psc, sc)
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("runAsNonRoot must be true for the pod and the container")
	}
	if psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("runAsUser %v: want a non-root uid", psc.RunAsUser)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem must be true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || (sc.Privileged != nil && *sc.Privileged) {
		t.Error("allowPrivilegeEscalation must be false, and the container unprivileged")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("capabilities %+v: want drop [ALL], add none", sc.Capabilities)
	}
	for _, s := range []*corev1.SeccompProfile{psc.SeccompProfile, sc.SeccompProfile} {
		if s == nil || s.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("seccompProfile %+v: want RuntimeDefault", s)
		}
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the pod must not mount a Kubernetes API token")
	}
	if pod.ServiceAccountName != r.serviceAccount.Name {
		t.Errorf("the pod runs as %q, the chart's ServiceAccount is %q", pod.ServiceAccountName, r.serviceAccount.Name)
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Error("the pod must not share the host's namespaces")
	}
	req, lim := c.Resources.Requests, c.Resources.Limits
	cpu, mem := req[corev1.ResourceCPU], req[corev1.ResourceMemory]
	if cpu.IsZero() || mem.Cmp(resource.MustParse("128Mi")) < 0 {
		t.Errorf("requests %v: want CPU and at least 128Mi (the soak's live heap is ~65 MiB plus the decision cache)", req)
	}
	if l, ok := lim[corev1.ResourceMemory]; ok && l.Cmp(mem) < 0 {
		t.Errorf("memory limit %v under the request %v", &l, &mem)
	}
}

// checkVolumes: every mount has its volume, every volume is mounted, every
// ConfigMap volume names a rendered ConfigMap.
func checkVolumes(t *testing.T, r *release, c corev1.Container) {
	t.Helper()
	pod := r.deployment.Spec.Template.Spec
	mounted := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounted[m.Name] = true
		volumeOf(t, pod, func(v corev1.Volume) bool { return v.Name == m.Name })
		if m.MountPath == "/" || !path.IsAbs(m.MountPath) {
			t.Errorf("mount %s at %q", m.Name, m.MountPath)
		}
	}
	for _, v := range pod.Volumes {
		if !mounted[v.Name] {
			t.Errorf("volume %s is not mounted", v.Name)
		}
		if v.ConfigMap != nil && r.configMaps[v.ConfigMap.Name] == nil {
			t.Errorf("volume %s names ConfigMap %s, which the chart does not render", v.Name, v.ConfigMap.Name)
		}
	}
}

// checkPolicy: a ConfigMap policy is mounted where policy.dir says, holds
// the shipped engine as policies/ has it, loads in the real engine and
// decides as the value set says; a bundle policy has its URL and a
// writable place to persist to.
func checkPolicy(t *testing.T, r *release, c corev1.Container, cfg *config.Config, vs valueSet) {
	t.Helper()
	pod := r.deployment.Spec.Template.Spec
	if vs.bundleURL != "" {
		b := cfg.Policy.Bundle
		if b == nil || b.URL != vs.bundleURL || cfg.Policy.Dir != "" {
			t.Fatalf("policy %+v: want the bundle %s and no dir", cfg.Policy, vs.bundleURL)
		}
		if _, ok := r.configMaps[fullname+"-policy"]; ok {
			t.Error("a policy ConfigMap with bundle policy")
		}
		checkBundle(t, pod, c, b)
		return
	}
	if cfg.Policy.Bundle != nil {
		t.Fatalf("policy.bundle %+v with ConfigMap policy", cfg.Policy.Bundle)
	}
	m := mountAt(t, c, cfg.Policy.Dir)
	v := volumeOf(t, pod, func(v corev1.Volume) bool { return v.Name == m.Name })
	if v.ConfigMap == nil {
		t.Fatalf("policy.dir %s is volume %+v, want a ConfigMap", cfg.Policy.Dir, v.VolumeSource)
	}
	cm := r.configMaps[v.ConfigMap.Name]
	shipped, err := os.ReadFile(filepath.Join(repoRoot, "policies", "authz.rego"))
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["authz.rego"] != string(shipped) {
		t.Error("the policy ConfigMap's authz.rego is not policies/authz.rego")
	}
	dir := kubeletConfigMapDir(t, cm)
	eng, err := policy.Load(context.Background(), policy.Config{Dir: dir, Mode: policy.ModeEnforce})
	if err != nil {
		t.Fatalf("the rendered policy does not load: %v", err)
	}
	if !eng.Active() {
		t.Fatal("the rendered policy loaded inactive")
	}
	for _, d := range vs.decisions {
		id, err := spiffeid.FromString(d.caller)
		if err != nil {
			t.Fatal(err)
		}
		op := &gate.Op{Protocol: gate.ProtocolEtcd, Resource: gate.ResourceKV, Action: d.action, Keys: gate.KeyRange{Key: []byte(d.key)}}
		got, err := eng.Authorize(context.Background(), gate.Identity{ID: id}, op)
		if err != nil || got.Effect != d.want {
			t.Errorf("%s %s %s: %v (%s) %v, want %v", d.caller, d.action, d.key, got.Effect, got.Reason, err, d.want)
		}
	}
}

// checkBundle: the bundle persists to a writable emptyDir of its own.
func checkBundle(t *testing.T, pod corev1.PodSpec, c corev1.Container, b *config.BundleConfig) {
	t.Helper()
	m := mountAt(t, c, b.PersistDir)
	v := volumeOf(t, pod, func(v corev1.Volume) bool { return v.Name == m.Name })
	if v.EmptyDir == nil || m.ReadOnly {
		t.Errorf("policy.bundle.persist_dir %s is %+v (read-only %v), want a writable emptyDir", b.PersistDir, v.VolumeSource, m.ReadOnly)
	}
}

// checkFiles: every file the config names (upstream certificates,
// passwords and tokens, the bundle's key and CA) is in a read-only mount of
// a Secret that holds it under that name.
func checkFiles(t *testing.T, pod corev1.PodSpec, c corev1.Container, cfg *config.Config) {
	t.Helper()
	files := map[string]string{}
	tlsFiles := func(where string, f config.TLSFiles) {
		files[where+".cert"], files[where+".key"], files[where+".ca"] = f.Cert, f.Key, f.CA
	}
	if e := cfg.Upstreams.Etcd; e != nil {
		tlsFiles("upstreams.etcd.tls", e.TLS)
		files["upstreams.etcd.password_file"] = e.PasswordFile
	}
	if cu := cfg.Upstreams.Consul; cu != nil {
		tlsFiles("upstreams.consul.tls", cu.TLS)
		files["upstreams.consul.token_file"] = cu.TokenFile
	}
	if b := cfg.Policy.Bundle; b != nil {
		tlsFiles("policy.bundle.tls", b.TLS)
		files["policy.bundle.verification.public_key"] = b.Verification.PublicKey
	}
	for where, file := range files {
		if file == "" {
			continue
		}
		var m *corev1.VolumeMount
		for i, vm := range c.VolumeMounts {
			if path.Dir(file) == vm.MountPath {
				m = &c.VolumeMounts[i]
			}
		}
		if m == nil {
			t.Errorf("%s: %s is in no mounted directory", where, file)
			continue
		}
		if !m.ReadOnly {
			t.Errorf("%s: %s is in the writable mount %s", where, file, m.Name)
		}
		v := volumeOf(t, pod, func(v corev1.Volume) bool { return v.Name == m.Name })
		name := path.Base(file)
		switch {
		case v.Secret != nil:
			for _, it := range v.Secret.Items {
				if it.Path == name {
					name = ""
				}
			}
			if len(v.Secret.Items) > 0 && name != "" {
				t.Errorf("%s: Secret volume %s does not project %s", where, v.Name, name)
			}
		case v.Projected != nil:
			found := false
			for _, src := range v.Projected.Sources {
				if src.Secret == nil {
					continue
				}
				for _, it := range src.Secret.Items {
					found = found || it.Path == name
				}
			}
			if !found {
				t.Errorf("%s: projected volume %s holds no %s", where, v.Name, name)
			}
		default:
			t.Errorf("%s: %s is in volume %+v, not a Secret", where, file, v.VolumeSource)
		}
	}
}

// kubeletConfigMapDir writes a ConfigMap's data as the kubelet mounts it:
// the files in a timestamped directory, ..data a link to it, and each name
// a link through ..data.
func kubeletConfigMapDir(t *testing.T, cm *corev1.ConfigMap) string {
	t.Helper()
	dir := t.TempDir()
	ts := "..2026_01_01_00_00_00.000000001"
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name, data := range cm.Data {
		if err := os.WriteFile(filepath.Join(dir, ts, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// checkLabels: every object carries the Helm conventions' labels and the
// release's namespace; the pods carry the selector's labels.
func checkLabels(t *testing.T, r *release) {
	t.Helper()
	want := map[string]string{
		"app.kubernetes.io/name":       "storegate",
		"app.kubernetes.io/instance":   releaseName,
		"app.kubernetes.io/managed-by": "Helm",
		"app.kubernetes.io/version":    "",
		"helm.sh/chart":                "",
	}
	for _, o := range r.objects {
		if o.meta.Namespace != namespace {
			t.Errorf("%s %s: namespace %q, want %q", o.kind, o.meta.Name, o.meta.Namespace, namespace)
		}
		if !strings.HasPrefix(o.meta.Name, fullname) {
			t.Errorf("%s %s: not named for the release (%s)", o.kind, o.meta.Name, fullname)
		}
		for k, v := range want {
			got, ok := o.meta.Labels[k]
			if !ok || (v != "" && got != v) {
				t.Errorf("%s %s: label %s=%q, want %q", o.kind, o.meta.Name, k, got, v)
			}
		}
	}
	sel := r.deployment.Spec.Selector.MatchLabels
	if len(sel) == 0 {
		t.Fatal("the Deployment selects no labels")
	}
	for k, v := range sel {
		if r.deployment.Spec.Template.Labels[k] != v {
			t.Errorf("pod template lacks the selector's label %s=%s", k, v)
		}
	}
}

// TestChecksumFollowsConfig: a change to the config file changes the pods'
// checksum/config annotation (so the pods roll), the same values give the
// same annotation, and a policy change leaves it alone (policy reloads live).
func TestChecksumFollowsConfig(t *testing.T) {
	values := filepath.Join("testdata", "default.yaml")
	sum := func(r *release) string { return r.deployment.Spec.Template.Annotations["checksum/config"] }
	base := render(t, values)
	again := render(t, values)
	if sum(base) == "" || sum(base) != sum(again) {
		t.Fatalf("the same values give checksums %q and %q", sum(base), sum(again))
	}
	for _, set := range [][]string{
		{"--set", "gateway.fleetTTL=20s"},
		{"--set", "drain.timeoutSeconds=16"},
		{"--set", "policy.mode=shadow"},
		{"--set-json", `gateway.etcd.endpoints=["https://etcd-9:2379"]`},
	} {
		changed := render(t, values, set...)
		if sum(changed) == sum(base) {
			t.Errorf("%v changes the config file but not checksum/config", set)
		}
		if changed.configMaps[fullname].Data["storegate.yaml"] == base.configMaps[fullname].Data["storegate.yaml"] {
			t.Errorf("%v did not change the config file", set)
		}
	}
	policyOnly := render(t, values, "--set-json",
		`policy.configMap.intentions=[{"name":"all","source":"**","resources":["*"],"actions":["read"],"effect":"allow"}]`)
	if sum(policyOnly) != sum(base) {
		t.Error("a policy change rolls the pods; the gateway reloads policy without a restart")
	}
	if policyOnly.configMaps[fullname+"-policy"].Data["intentions.yaml"] == base.configMaps[fullname+"-policy"].Data["intentions.yaml"] {
		t.Error("the intentions did not reach the policy ConfigMap")
	}
}

// TestBadValuesFail: values that would make a broken release fail `helm
// template` (and so `helm install`), saying what is wrong. Those the schema
// catches fail `helm lint --strict` too; the rest are the templates' `fail`
// calls, which `helm lint` by design only logs (lint renders charts whose
// required values are missing), so for them lint is not asked.
func TestBadValuesFail(t *testing.T) {
	for file, c := range map[string]struct {
		want   string
		schema bool
	}{
		"replicas-negative.yaml":      {"/replicaCount", true},
		"grace-too-small.yaml":        {"terminationGracePeriodSeconds 20 must be above drain.preStopSleepSeconds + drain.timeoutSeconds (20)", false},
		"unknown-key.yaml":            {"'timeout' not allowed", true},
		"hpa-min-above-max.yaml":      {"autoscaling.minReplicas 5 is above autoscaling.maxReplicas 3", false},
		"bundle-without-url.yaml":     {"/policy/bundle/url", true},
		"no-trust-domain.yaml":        {"/gateway/trustDomains", true},
		"duration-without-unit.yaml":  {"/gateway/fleetTTL", true},
		"tls-spiffe-and-secret.yaml":  {"/gateway/etcd/tls/secretName", true},
		"no-front.yaml":               {"/gateway/etcd/enabled", true},
		"etcd-without-endpoints.yaml": {"/gateway/etcd/endpoints", true},
		"bundle-without-key.yaml":     {"/policy/bundle/verification/publicKeySecret/name", true},
	} {
		t.Run(file, func(t *testing.T) {
			values := filepath.Join("testdata", "bad", file)
			out, stderr, err := helm(t, "template", releaseName, chartDir, "--namespace", namespace, "-f", values)
			if err == nil || !strings.Contains(stderr, c.want) {
				t.Errorf("helm template: %v, want a failure saying %q\n%s%s", err, c.want, stderr, out)
			}
			if !c.schema {
				return
			}
			out, stderr, err = helm(t, "lint", "--strict", chartDir, "-f", values)
			if err == nil || !strings.Contains(out, "[ERROR] values.yaml") || !strings.Contains(out, c.want) {
				t.Errorf("helm lint --strict: %v, want a failure saying %q\n%s%s", err, c.want, out, stderr)
			}
		})
	}
	entries, err := os.ReadDir(filepath.Join("testdata", "bad"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 11 {
		t.Errorf("testdata/bad holds %d files, the table tests 11", len(entries))
	}
}

// TestSkippedSchemaStillFails: the templates check what a release cannot
// run without even when the schema is skipped (helm's
// --skip-schema-validation), in words that say what to set.
func TestSkippedSchemaStillFails(t *testing.T) {
	for file, want := range map[string]string{
		"bundle-without-url.yaml":     "policy.bundle.url: the bundle's http(s):// address is required",
		"no-trust-domain.yaml":        "gateway.trustDomains: at least one SPIFFE trust domain is required",
		"tls-spiffe-and-secret.yaml":  "gateway.etcd.tls: set spiffe or secretName, not both",
		"no-front.yaml":               "with neither there is nothing to serve",
		"etcd-without-endpoints.yaml": "gateway.etcd.endpoints: the etcd cluster's client URLs are required",
		"bundle-without-key.yaml":     "policy.bundle.verification.publicKeySecret.name: the Secret with the bundles' verification key is required",
	} {
		t.Run(file, func(t *testing.T) {
			values := filepath.Join("testdata", "bad", file)
			out, stderr, err := helm(t, "template", releaseName, chartDir, "--namespace", namespace, "--skip-schema-validation", "-f", values)
			if err == nil || !strings.Contains(stderr, want) {
				t.Errorf("helm template --skip-schema-validation: %v, want a failure saying %q\n%s%s", err, want, stderr, out)
			}
		})
	}
}

// TestNotes: NOTES.txt (rendered only by install) renders for every value
// set and tells the operator the fronts' addresses and the stop timing.
func TestNotes(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.file, func(t *testing.T) {
			out, stderr, err := helm(t, "install", releaseName, chartDir, "--dry-run=client", "--namespace", namespace,
				"-f", filepath.Join("testdata", vs.file))
			if err != nil {
				t.Fatalf("helm install --dry-run=client: %v\n%s", err, stderr)
			}
			_, notes, ok := strings.Cut(out, "\nNOTES:\n")
			if !ok {
				t.Fatalf("no NOTES in:\n%s", out)
			}
			r := render(t, filepath.Join("testdata", vs.file))
			svc := fullname + "." + namespace + ".svc"
			want := []string{fmt.Sprintf("http://%s:%d", svc, servicePort(t, r.service, "admin")),
				fmt.Sprintf("Kubernetes kills it after %ds", *r.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds)}
			for _, front := range vs.fronts {
				want = append(want, fmt.Sprintf("%s: https://%s:%d", front, svc, servicePort(t, r.service, front)))
			}
			words := strings.Join(strings.Fields(notes), " ")
			for _, w := range want {
				if !strings.Contains(words, w) {
					t.Errorf("NOTES lack %q:\n%s", w, notes)
				}
			}
		})
	}
}

// TestPackage: `helm package` makes a chart that stands alone: the shipped
// engine (files/authz.rego, a link to policies/authz.rego) is in it as a
// file with the engine's content, and nothing of the Go test module is.
func TestPackage(t *testing.T) {
	dest := t.TempDir()
	out, stderr, err := helm(t, "package", chartDir, "--destination", dest)
	if err != nil {
		t.Fatalf("helm package: %v\n%s%s", err, out, stderr)
	}
	pkgs, err := filepath.Glob(filepath.Join(dest, "storegate-*.tgz"))
	if err != nil || len(pkgs) != 1 {
		t.Fatalf("helm package made %v (%v)", pkgs, err)
	}
	f, err := os.Open(pkgs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := os.ReadFile(filepath.Join(repoRoot, "policies", "authz.rego"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names[h.Name] = true
		if strings.HasSuffix(h.Name, ".go") || strings.HasSuffix(h.Name, "go.mod") || strings.Contains(h.Name, "testdata/") {
			t.Errorf("the package holds %s", h.Name)
		}
		if h.Name == "storegate/files/authz.rego" {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if h.Typeflag != tar.TypeReg || !bytes.Equal(b, shipped) {
				t.Errorf("the package's files/authz.rego (type %c) is not policies/authz.rego", h.Typeflag)
			}
		}
	}
	for _, want := range []string{"storegate/Chart.yaml", "storegate/values.yaml", "storegate/values.schema.json",
		"storegate/files/authz.rego", "storegate/templates/deployment.yaml", "storegate/templates/NOTES.txt"} {
		if !names[want] {
			t.Errorf("the package lacks %s", want)
		}
	}
}

func (r *release) kinds() []string {
	var out []string
	for _, o := range r.objects {
		out = append(out, o.kind+" "+o.meta.Name)
	}
	return out
}

func volumeOf(t *testing.T, pod corev1.PodSpec, match func(corev1.Volume) bool) corev1.Volume {
	t.Helper()
	for _, v := range pod.Volumes {
		if match(v) {
			return v
		}
	}
	t.Fatalf("no such volume among %+v", pod.Volumes)
	return corev1.Volume{}
}

func mountOf(t *testing.T, c corev1.Container, volume string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m
		}
	}
	t.Fatalf("volume %s is not mounted", volume)
	return corev1.VolumeMount{}
}

func mountAt(t *testing.T, c corev1.Container, dir string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath == dir {
			return m
		}
	}
	t.Fatalf("nothing is mounted at %s: %+v", dir, c.VolumeMounts)
	return corev1.VolumeMount{}
}

// listenPort is the port of a host:port listener.
func listenPort(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listener %q: %v", addr, err)
	}
	return portNumber(t, p)
}

func portNumber(t *testing.T, s string) int32 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		t.Fatalf("port %q: %v", s, err)
	}
	return int32(n)
}

// resolvePort is the container port a named or numbered port refers to.
func resolvePort(t *testing.T, c corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("port %q is not a container port", p.StrVal)
	return 0
}

func servicePort(t *testing.T, s *corev1.Service, name string) int32 {
	t.Helper()
	for _, p := range s.Spec.Ports {
		if p.Name == name {
			return p.Port
		}
	}
	t.Fatalf("the Service has no %s port", name)
	return 0
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func fmtPtr[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}
