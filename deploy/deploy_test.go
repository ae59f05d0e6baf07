package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The namespace, the ports and the image every file here must agree on.
const (
	namespace    = "porttrace"
	churnMetrics = "9470"
	eventMetrics = "9471"
)

// decodeStrict decodes one YAML document as the API server does when it
// validates strictly: a duplicate key, an unknown field, or a known one
// spelt in another case ("hostPid") is an error. (yaml.UnmarshalStrict
// goes through encoding/json, which matches names in any case.)
func decodeStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		return fmt.Errorf("%v", strict)
	}
	return nil
}

func TestDecodeStrictRejects(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		ok        bool
	}{
		{"known fields", "spec:\n  hostPID: true\n", true},
		{"unknown field", "spec:\n  hostPIDs: true\n", false},
		{"field in another case", "spec:\n  hostPid: true\n", false},
		{"duplicate key", "spec:\n  hostPID: true\n  hostPID: false\n", false},
		{"wrong type", "spec:\n  hostPID: \"yes\"\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := decodeStrict([]byte(tc.doc), &corev1.Pod{})
			if (err == nil) != tc.ok {
				t.Errorf("decodeStrict(%q) = %v, want ok %v", tc.doc, err, tc.ok)
			}
		})
	}
}

// manifests decodes every document of every file in kubernetes/ strictly
// into its k8s.io/api type.
func manifests(t *testing.T) []any {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in kubernetes/: %v", err)
	}
	var objs []any
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range documents(b) {
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s, document %d: %v", file, i+1, err)
			}
			var obj any
			switch head.APIVersion + " " + head.Kind {
			case "v1 Namespace":
				obj = &corev1.Namespace{}
			case "v1 ServiceAccount":
				obj = &corev1.ServiceAccount{}
			case "apps/v1 DaemonSet":
				obj = &appsv1.DaemonSet{}
			default:
				t.Fatalf("%s, document %d: %s %s: a kind this test does not know", file, i+1, head.APIVersion, head.Kind)
			}
			if err := decodeStrict(doc, obj); err != nil {
				t.Fatalf("%s, document %d (%s): %v", file, i+1, head.Kind, err)
			}
			objs = append(objs, obj)
		}
	}
	return objs
}

// documents splits a YAML stream at its "---" lines, dropping empty
// documents (comments only).
func documents(b []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		if hasContent(cur.Bytes()) {
			docs = append(docs, bytes.Clone(cur.Bytes()))
		}
		cur.Reset()
	}
	for line := range bytes.Lines(b) {
		if strings.TrimRight(string(line), " \r\n") == "---" {
			flush()
			continue
		}
		cur.Write(line)
	}
	flush()
	return docs
}

func hasContent(doc []byte) bool {
	for line := range bytes.Lines(doc) {
		s := strings.TrimSpace(string(line))
		if s != "" && !strings.HasPrefix(s, "#") {
			return true
		}
	}
	return false
}

// daemonSet is the one DaemonSet of kubernetes/, with the other objects.
func daemonSet(t *testing.T) (*appsv1.DaemonSet, []any) {
	t.Helper()
	objs := manifests(t)
	var ds *appsv1.DaemonSet
	for _, o := range objs {
		if d, ok := o.(*appsv1.DaemonSet); ok {
			if ds != nil {
				t.Fatal("two DaemonSets in kubernetes/")
			}
			ds = d
		}
	}
	if ds == nil {
		t.Fatal("no DaemonSet in kubernetes/")
	}
	return ds, objs
}

func container(t *testing.T, ds *appsv1.DaemonSet, name string) corev1.Container {
	t.Helper()
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("DaemonSet has no container %q", name)
	return corev1.Container{}
}

// makeImage is the image `make image` tags for the DaemonSet: IMAGE (as
// the Makefile sets it) at the tag latest.
func makeImage(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^IMAGE \?= (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("Makefile sets no IMAGE ?= ...")
	}
	if !bytes.Contains(b, []byte("-t $(IMAGE):latest")) {
		t.Fatal("make image does not tag $(IMAGE):latest")
	}
	return string(m[1]) + ":latest"
}

// mount is a volume mount with the host path behind it.
type mount struct {
	host, path string
	readOnly   bool
}

func mounts(t *testing.T, spec corev1.PodSpec, c corev1.Container) []mount {
	t.Helper()
	var ms []mount
	for _, vm := range c.VolumeMounts {
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
		if i < 0 || spec.Volumes[i].HostPath == nil {
			t.Fatalf("container %s mounts %q, which is no hostPath volume", c.Name, vm.Name)
		}
		ms = append(ms, mount{spec.Volumes[i].HostPath.Path, vm.MountPath, vm.ReadOnly})
	}
	return ms
}

func capabilities(c corev1.Container) []string {
	var caps []string
	if sc := c.SecurityContext; sc != nil && sc.Capabilities != nil {
		for _, c := range sc.Capabilities.Add {
			caps = append(caps, "CAP_"+string(c))
		}
	}
	slices.Sort(caps)
	return caps
}

// What each container must be: found by running porttrace with each
// capability and mount left out in turn (README, "Deploy").
var wantContainers = []struct {
	name    string
	args    []string
	port    string
	caps    []string
	mounts  []mount
	seccomp corev1.SeccompProfileType
	noEsc   bool // allowPrivilegeEscalation: false (CAP_SYS_ADMIN forbids it)
	unit    string
}{
	{
		name:    "events",
		args:    []string{"-o", "json", "--metrics", ":" + eventMetrics},
		port:    eventMetrics,
		caps:    []string{"CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_SYS_RESOURCE"},
		mounts:  []mount{{"/sys/kernel/tracing", "/sys/kernel/tracing", false}, {"/sys/fs/cgroup", "/sys/fs/cgroup", true}, {"/etc/passwd", "/etc/passwd", true}},
		seccomp: corev1.SeccompProfileTypeUnconfined,
		noEsc:   true,
		unit:    "systemd/porttrace.service",
	},
	{
		name:    "churn",
		args:    []string{"churn", "--metrics", ":" + churnMetrics, "-o", "json", "-i", "5s"},
		port:    churnMetrics,
		caps:    []string{"CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_RESOURCE"},
		mounts:  []mount{{"/sys/kernel/tracing", "/sys/kernel/tracing", false}},
		seccomp: corev1.SeccompProfileTypeRuntimeDefault,
		unit:    "systemd/porttrace-churn.service",
	},
}

func TestManifestsAreStrict(t *testing.T) {
	kinds := map[string]int{}
	for _, o := range manifests(t) {
		var ns, name string
		switch o := o.(type) {
		case *corev1.Namespace:
			kinds["Namespace"]++
			ns, name = o.Name, o.Name
		case *corev1.ServiceAccount:
			kinds["ServiceAccount"]++
			ns, name = o.Namespace, o.Name
			if o.AutomountServiceAccountToken == nil || *o.AutomountServiceAccountToken {
				t.Errorf("ServiceAccount %s mounts a token: porttrace never calls the API", name)
			}
		case *appsv1.DaemonSet:
			kinds["DaemonSet"]++
			ns, name = o.Namespace, o.Name
		}
		if ns != namespace {
			t.Errorf("%T %s is in namespace %q, not %q", o, name, ns, namespace)
		}
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "DaemonSet"} {
		if kinds[k] != 1 {
			t.Errorf("%d %s objects in kubernetes/, want 1", kinds[k], k)
		}
	}
}

func TestDaemonSetPod(t *testing.T) {
	ds, objs := daemonSet(t)
	spec := ds.Spec.Template.Spec
	var sa *corev1.ServiceAccount
	for _, o := range objs {
		if s, ok := o.(*corev1.ServiceAccount); ok {
			sa = s
		}
	}
	checks := []struct {
		what string
		ok   bool
	}{
		{"hostPID (the node's /proc: exe, cgroup, namespaces)", spec.HostPID},
		{"hostNetwork (churn's own namespace is the node's; /metrics on the node)", spec.HostNetwork},
		{"dnsPolicy ClusterFirstWithHostNet", spec.DNSPolicy == corev1.DNSClusterFirstWithHostNet},
		{"tolerates every taint", slices.ContainsFunc(spec.Tolerations, func(t corev1.Toleration) bool {
			return t.Operator == corev1.TolerationOpExists && t.Key == "" && t.Effect == ""
		})},
		{"runs as the ServiceAccount", sa != nil && spec.ServiceAccountName == sa.Name},
		{"mounts no API token", spec.AutomountServiceAccountToken != nil && !*spec.AutomountServiceAccountToken},
		{"selector matches the pod's labels", ds.Spec.Selector != nil &&
			ds.Spec.Selector.MatchLabels["app.kubernetes.io/name"] == ds.Spec.Template.Labels["app.kubernetes.io/name"]},
		{"prometheus.io/scrape true", ds.Spec.Template.Annotations["prometheus.io/scrape"] == "true"},
		{"prometheus.io/port is churn's --metrics port", ds.Spec.Template.Annotations["prometheus.io/port"] == churnMetrics},
		{"two containers", len(spec.Containers) == len(wantContainers)},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("DaemonSet: not %s", c.what)
		}
	}
}

func TestDaemonSetContainers(t *testing.T) {
	ds, _ := daemonSet(t)
	spec := ds.Spec.Template.Spec
	image := makeImage(t)
	for _, want := range wantContainers {
		t.Run(want.name, func(t *testing.T) {
			c := container(t, ds, want.name)
			if c.Image != image {
				t.Errorf("image %q, want %q (what make image tags)", c.Image, image)
			}
			if c.ImagePullPolicy != corev1.PullIfNotPresent {
				t.Errorf("imagePullPolicy %q: a :latest image built on the node is never pulled", c.ImagePullPolicy)
			}
			if len(c.Command) != 0 || !slices.Equal(c.Args, want.args) {
				t.Errorf("command %q args %q, want the entrypoint with %q", c.Command, c.Args, want.args)
			}
			if len(c.Ports) != 1 || fmt.Sprint(c.Ports[0].ContainerPort) != want.port || !strings.Contains(c.Ports[0].Name, "metrics") {
				t.Errorf("ports %+v, want one metrics port %s, as --metrics says", c.Ports, want.port)
			}
			if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/metrics" || len(c.Ports) == 0 || p.HTTPGet.Port.String() != c.Ports[0].Name {
				t.Errorf("liveness probe %+v, want GET /metrics on the metrics port", p)
			}
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
				if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
					t.Errorf("%s: request %s, limit %s", r, req.String(), lim.String())
				}
			}
			sc := c.SecurityContext
			if sc == nil || sc.Capabilities == nil {
				t.Fatal("no securityContext.capabilities")
			}
			checks := []struct {
				what string
				ok   bool
			}{
				{"runAsUser 0", sc.RunAsUser != nil && *sc.RunAsUser == 0},
				{"runAsNonRoot false", sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot},
				{"privileged false", sc.Privileged != nil && !*sc.Privileged},
				{"readOnlyRootFilesystem", sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem},
				{"drops ALL capabilities", slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"})},
				{"seccomp " + string(want.seccomp), sc.SeccompProfile != nil && sc.SeccompProfile.Type == want.seccomp},
				{fmt.Sprintf("allowPrivilegeEscalation %v", !want.noEsc), want.noEsc == (sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation)},
			}
			for _, c := range checks {
				if !c.ok {
					t.Errorf("not %s", c.what)
				}
			}
			if got := capabilities(c); !slices.Equal(got, want.caps) {
				t.Errorf("capabilities %q, want %q", got, want.caps)
			}
			if got := mounts(t, spec, c); !slices.Equal(got, want.mounts) {
				t.Errorf("mounts %+v, want %+v", got, want.mounts)
			}
		})
	}
}

// The YAML says why each capability is there, and the README says what
// each capability and mount is for.
func TestCapabilitiesAndMountsExplained(t *testing.T) {
	ds, _ := daemonSet(t)
	yamlText, err := os.ReadFile("kubernetes/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	readme := readmeSection(t, "## Deploy")
	for _, c := range ds.Spec.Template.Spec.Containers {
		for _, cp := range capabilities(c) {
			if !bytes.Contains(yamlText, []byte("# "+cp)) {
				t.Errorf("daemonset.yaml: no comment on %s", cp)
			}
			if !strings.Contains(readme, "`"+cp+"`") {
				t.Errorf("README, Deploy: %s is not explained", cp)
			}
		}
	}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if !strings.Contains(readme, "`"+v.HostPath.Path+"`") {
			t.Errorf("README, Deploy: the mount of %s is not explained", v.HostPath.Path)
		}
	}
}

func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README has no %q section", heading)
	}
	section, _, _ := strings.Cut(rest, "\n## ")
	return section
}

// The scrape configuration keeps the metrics ports of both containers.
func TestScrapeConfig(t *testing.T) {
	ds, _ := daemonSet(t)
	b, err := os.ReadFile("prometheus/scrape-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type relabel struct {
		SourceLabels []string `json:"source_labels"`
		Action       string   `json:"action"`
		Regex        string   `json:"regex"`
		TargetLabel  string   `json:"target_label"`
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName             string `json:"job_name"`
			KubernetesSDConfigs []struct {
				Role       string `json:"role"`
				Namespaces struct {
					Names []string `json:"names"`
				} `json:"namespaces"`
			} `json:"kubernetes_sd_configs"`
			RelabelConfigs []relabel `json:"relabel_configs"`
		} `json:"scrape_configs"`
	}
	if err := decodeStrict(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.ScrapeConfigs) != 1 || len(cfg.ScrapeConfigs[0].KubernetesSDConfigs) != 1 {
		t.Fatalf("want one scrape config with one kubernetes_sd_config: %+v", cfg)
	}
	sc := cfg.ScrapeConfigs[0]
	if sd := sc.KubernetesSDConfigs[0]; sd.Role != "pod" || !slices.Equal(sd.Namespaces.Names, []string{namespace}) {
		t.Errorf("kubernetes_sd_configs %+v, want role pod in namespace %s", sd, namespace)
	}
	keep := map[string]*regexp.Regexp{}
	for _, r := range sc.RelabelConfigs {
		if r.Action == "keep" && len(r.SourceLabels) == 1 {
			keep[r.SourceLabels[0]] = regexp.MustCompile("^(?:" + r.Regex + ")$") // Prometheus anchors regexes
		}
	}
	if re := keep["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]; re == nil || !re.MatchString(ds.Spec.Template.Annotations["prometheus.io/scrape"]) {
		t.Error("the scrape config does not keep pods by the prometheus.io/scrape annotation the DaemonSet sets")
	}
	re := keep["__meta_kubernetes_pod_container_port_name"]
	if re == nil {
		t.Fatal("the scrape config keeps no container ports by name")
	}
	for _, c := range ds.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if !re.MatchString(p.Name) {
				t.Errorf("container %s's port %s (%d) is not scraped", c.Name, p.Name, p.ContainerPort)
			}
		}
	}
}

// Each systemd unit runs what its container runs, with the same
// capabilities as its bounding set.
func TestSystemdUnits(t *testing.T) {
	ds, _ := daemonSet(t)
	for _, want := range wantContainers {
		t.Run(filepath.Base(want.unit), func(t *testing.T) {
			c := container(t, ds, want.name)
			unit := unitSettings(t, want.unit)
			exec := strings.Fields(unit["ExecStart"])
			if len(exec) == 0 || exec[0] != "/usr/local/bin/porttrace" || !slices.Equal(exec[1:], c.Args) {
				t.Errorf("ExecStart %q, want /usr/local/bin/porttrace with the container's args %q", unit["ExecStart"], c.Args)
			}
			caps := strings.Fields(unit["CapabilityBoundingSet"])
			slices.Sort(caps)
			if !slices.Equal(caps, capabilities(c)) {
				t.Errorf("CapabilityBoundingSet %q, want the container's %q", caps, capabilities(c))
			}
			for k, v := range map[string]string{"User": "root", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ReadWritePaths": "/sys/kernel/tracing"} {
				if unit[k] != v {
					t.Errorf("%s=%q, want %q", k, unit[k], v)
				}
			}
			if _, ok := unit["ProtectProc"]; ok {
				t.Error("ProtectProc hides the processes porttrace reports")
			}
		})
	}
}

// unitSettings reads a unit file's Key=Value lines (the last of a key).
func unitSettings(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			settings[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return settings
}
