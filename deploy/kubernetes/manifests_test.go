// Package kubernetes holds chainwatch's Kubernetes manifests; its test
// decodes them strictly into the API's typed objects.
package kubernetes

import (
	"bytes"
	"os"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// TestManifestsDecodeStrictly decodes every document of chainwatch.yaml
// into its typed object with unknown fields rejected, and checks what the
// deployment relies on: probes on /healthz and /readyz, the operations
// port, one consumer group's worth of replicas behind a disruption budget,
// and a ServiceMonitor that scrapes /metrics.
func TestManifestsDecodeStrictly(t *testing.T) {
	raw, err := os.ReadFile("chainwatch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	var dep appsv1.Deployment
	var mon monitoringv1.ServiceMonitor
	var pdb policyv1.PodDisruptionBudget
	var cm corev1.ConfigMap
	for i, doc := range bytes.Split(raw, []byte("\n---\n")) {
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var into any
		switch meta.Kind {
		case "ConfigMap":
			into = &cm
		case "Secret":
			into = &corev1.Secret{}
		case "Deployment":
			into = &dep
		case "Service":
			into = &corev1.Service{}
		case "ServiceMonitor":
			into = &mon
		case "PodDisruptionBudget":
			into = &pdb
		default:
			t.Fatalf("document %d: unexpected kind %q", i, meta.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			t.Errorf("%s: %v", meta.Kind, err)
		}
		kinds[meta.Kind]++
	}
	for _, k := range []string{"ConfigMap", "Secret", "Deployment", "Service", "ServiceMonitor", "PodDisruptionBudget"} {
		if kinds[k] != 1 {
			t.Errorf("%d %s documents, want 1", kinds[k], k)
		}
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Error("the container is not probed on /readyz and /healthz")
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 9477 {
		t.Errorf("ports %+v, want the operations port 9477", c.Ports)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 || pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 {
		t.Error("want at least two replicas and a disruption budget keeping one")
	}
	if len(mon.Spec.Endpoints) != 1 || mon.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v", mon.Spec.Endpoints)
	}
	if !strings.Contains(cm.Data["chainwatch.yaml"], "listen: 0.0.0.0:9477") {
		t.Error("the configuration does not listen on all interfaces for the probes and scrapes")
	}
}
