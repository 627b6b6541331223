// kubecheck decodes every object of multi-document Kubernetes YAML files
// strictly (unknown or mistyped fields are errors) into the k8s.io/api types
// of its kind. Kinds it has no type for (CRDs such as ServiceMonitor and
// PrometheusRule) are reported as skipped after a check that they have
// apiVersion, kind, metadata.name and spec. It stands in for kubeconform,
// whose JSON schemas cannot be downloaded on the CI machines.
package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

func newObject(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	}
	return nil
}

func main() {
	bad := 0
	for _, path := range os.Args[1:] {
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		valid, skipped := 0, 0
		for i, doc := range bytes.Split(data, []byte("\n---")) {
			var head struct {
				APIVersion string         `json:"apiVersion"`
				Kind       string         `json:"kind"`
				Metadata   map[string]any `json:"metadata"`
				Spec       map[string]any `json:"spec"`
			}
			if err := yaml.Unmarshal(doc, &head); err != nil {
				fmt.Printf("%s: document %d: %v\n", path, i, err)
				bad++
				continue
			}
			if head.Kind == "" && head.APIVersion == "" {
				continue // comments only
			}
			name, _ := head.Metadata["name"].(string)
			where := fmt.Sprintf("%s: %s %s", path, head.Kind, name)
			if name == "" || head.APIVersion == "" || head.Kind == "" {
				fmt.Printf("%s: missing apiVersion, kind or metadata.name\n", where)
				bad++
				continue
			}
			obj := newObject(head.APIVersion, head.Kind)
			if obj == nil {
				if head.Spec == nil {
					fmt.Printf("%s: %s has no spec\n", where, head.APIVersion)
					bad++
				}
				skipped++
				continue
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				fmt.Printf("%s: %v\n", where, strings.TrimSpace(err.Error()))
				bad++
				continue
			}
			valid++
			// With KUBECHECK_CONFIG_DIR, sidegate's own configuration from
			// the ConfigMap is written out for "sidegate check-config".
			if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Data["sidegate.yaml"] != "" {
				if dir := os.Getenv("KUBECHECK_CONFIG_DIR"); dir != "" {
					out := filepath.Join(dir, strings.TrimSuffix(filepath.Base(path), ".yaml")+".sidegate.yaml")
					if err := os.WriteFile(out, []byte(cm.Data["sidegate.yaml"]), 0o600); err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(2)
					}
				}
			}
		}
		fmt.Printf("%s: %d objects decoded strictly, %d of unknown kinds (CRDs) skipped\n", path, valid, skipped)
	}
	if bad > 0 {
		fmt.Printf("%d invalid objects\n", bad)
		os.Exit(1)
	}
}
