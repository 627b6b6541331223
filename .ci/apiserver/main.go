// apiservercheck drives .ci/dryrun: a server-side dry run of Kubernetes
// objects against a real kube-apiserver, built from this module (go.mod's
// tool directive) and run on Debian's etcd. Subcommands:
//
//	ports N                  print N free loopback TCP ports
//	keygen FILE              write an ECDSA P-256 key (service-account signing)
//	wait [flags] URL         poll URL until it answers 200 (etcd /health, /readyz)
//	dryrun [flags] FILE...   install the -crd files, create the namespaces,
//	                         then create every object of FILE... with
//	                         dryRun=All and fieldValidation=Strict
//
// dryrun prints each rejected object (file, kind and name, the API's error)
// and exits 1 if any was rejected. Documents with neither apiVersion nor
// kind (files that are not Kubernetes objects) are counted and skipped.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: apiservercheck ports|keygen|wait|dryrun ...")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "ports":
		err = ports(args)
	case "keygen":
		err = keygen(args)
	case "wait":
		err = wait(args)
	case "dryrun":
		err = dryrun(args)
	default:
		err = fmt.Errorf("unknown subcommand %q", cmd)
	}
	if errors.Is(err, errRejected) {
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "apiservercheck %s: %v\n", os.Args[1], err)
		os.Exit(2)
	}
}

// ports holds N listeners open at once, so the ports differ, and prints them.
func ports(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: ports N")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		out = append(out, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	fmt.Println(strings.Join(out, " "))
	return nil
}

func keygen(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: keygen FILE")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(args[0], pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

// wait polls a URL until it answers 200, the deadline passes, or the
// process -pid has exited (then there is no point in waiting).
func wait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	pid := fs.Int("pid", 0, "fail as soon as this process has exited")
	caFile := fs.String("ca-file", "", "CA bundle for an https URL (read at each attempt: it may not exist yet)")
	tokenFile := fs.String("token-file", "", "bearer token")
	fs.Parse(args)
	if fs.NArg() != 1 {
		return errors.New("usage: wait [flags] URL")
	}
	url := fs.Arg(0)
	deadline := time.Now().Add(*timeout)
	var last error
	for {
		if *pid != 0 && !running(*pid) {
			return fmt.Errorf("%s: process %d exited (last error: %v)", url, *pid, last)
		}
		if last = get(url, *caFile, *tokenFile); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not ready after %s: %v", url, *timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// running reports whether pid exists and is not a zombie.
func running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func get(url, caFile, tokenFile string) error {
	tr := &http.Transport{}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no certificates", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if tokenFile != "" {
		token, err := os.ReadFile(tokenFile)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, lastLines(string(body), 5))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

var errRejected = errors.New("objects rejected")

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// warnings prints the API's warnings (deprecations, PodSecurity, ...)
// against the object being created.
type warnings struct{ current string }

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	fmt.Printf("%s: warning: %s\n", w.current, text)
}

func dryrun(args []string) error {
	fs := flag.NewFlagSet("dryrun", flag.ExitOnError)
	server := fs.String("server", "", "kube-apiserver URL")
	caFile := fs.String("ca-file", "", "CA bundle for -server")
	tokenFile := fs.String("token-file", "", "bearer token")
	namespace := fs.String("namespace", "default", "namespace for namespaced objects that name none (helm template --namespace)")
	timeout := fs.Duration("timeout", 5*time.Minute, "deadline for the whole run")
	var crds listFlag
	fs.Var(&crds, "crd", "file of CustomResourceDefinitions to install first (repeatable)")
	fs.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	token, err := os.ReadFile(*tokenFile)
	if err != nil {
		return err
	}
	warn := &warnings{}
	cfg := &rest.Config{
		Host:            *server,
		BearerToken:     strings.TrimSpace(string(token)),
		TLSClientConfig: rest.TLSClientConfig{CAFile: *caFile},
		QPS:             100,
		Burst:           200,
		WarningHandler:  warn,
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}

	start := time.Now()
	var defs []*unstructured.Unstructured
	for _, path := range crds {
		objs, _, err := readObjects(path)
		if err != nil {
			return err
		}
		for _, obj := range objs {
			warn.current = fmt.Sprintf("%s: CustomResourceDefinition %s", path, obj.GetName())
			if _, err := dyn.Resource(crdResource).Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("%s: %w", warn.current, err)
			}
			defs = append(defs, obj)
		}
	}
	if err := waitServed(ctx, dyn, disco, defs); err != nil {
		return err
	}
	if len(defs) > 0 {
		fmt.Printf("%d CRDs established and served in %s\n", len(defs), time.Since(start).Round(time.Millisecond))
	}

	start = time.Now()
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))
	namespaces := map[string]bool{}
	total, bad := 0, 0
	for _, path := range fs.Args() {
		objs, skipped, err := readObjects(path)
		if err != nil {
			fmt.Printf("%s: %v\n", path, err)
			bad++
			continue
		}
		accepted := 0
		for _, obj := range objs {
			total++
			warn.current = fmt.Sprintf("%s: %s %s", path, obj.GetKind(), obj.GetName())
			if err := create(ctx, dyn, mapper, namespaces, *namespace, obj); err != nil {
				fmt.Printf("%s: REJECTED: %v\n", warn.current, err)
				bad++
				continue
			}
			accepted++
		}
		fmt.Printf("%s: %d objects accepted (dryRun=All, fieldValidation=Strict)", path, accepted)
		if skipped > 0 {
			fmt.Printf(", %d documents that are not Kubernetes objects skipped", skipped)
		}
		fmt.Println()
	}
	fmt.Printf("dry run of %d objects in %s\n", total, time.Since(start).Round(time.Millisecond))
	if bad > 0 {
		fmt.Printf("%d objects rejected by kube-apiserver\n", bad)
		return errRejected
	}
	return nil
}

// create dry-runs one object, first creating (for real) the namespace it
// goes into: the NamespaceLifecycle admission plugin rejects objects in
// a namespace that does not exist, dry run or not.
func create(ctx context.Context, dyn dynamic.Interface, mapper meta.RESTMapper, namespaces map[string]bool, defaultNamespace string, obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	if gvk.Kind == "" || gvk.Version == "" {
		return errors.New("missing apiVersion or kind")
	}
	mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return err
	}
	opts := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: metav1.FieldValidationStrict}
	if mapping.Scope.Name() != meta.RESTScopeNameNamespace {
		_, err = dyn.Resource(mapping.Resource).Create(ctx, obj, opts)
		return err
	}
	ns := obj.GetNamespace()
	if ns == "" {
		ns = defaultNamespace
	}
	if !namespaces[ns] {
		nsObj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns},
		}}
		nsResource := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
		if _, err := dyn.Resource(nsResource).Create(ctx, nsObj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", ns, err)
		}
		namespaces[ns] = true
	}
	_, err = dyn.Resource(mapping.Resource).Namespace(ns).Create(ctx, obj, opts)
	return err
}

// waitServed waits until every CRD is Established and its served versions
// appear in discovery (which the RESTMapper reads).
func waitServed(ctx context.Context, dyn dynamic.Interface, disco discovery.DiscoveryInterface, defs []*unstructured.Unstructured) error {
	for _, def := range defs {
		name := def.GetName()
		group, _, _ := unstructured.NestedString(def.Object, "spec", "group")
		plural, _, _ := unstructured.NestedString(def.Object, "spec", "names", "plural")
		versions, _, _ := unstructured.NestedSlice(def.Object, "spec", "versions")
		for {
			ready, why := established(ctx, dyn, name)
			if ready {
				ready, why = discovered(disco, group, plural, versions)
			}
			if ready {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("CRD %s: %s: %w", name, why, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

func established(ctx context.Context, dyn dynamic.Interface, name string) (bool, string) {
	crd, err := dyn.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, err.Error()
	}
	conditions, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conditions {
		c, _ := c.(map[string]any)
		if c["type"] == "Established" {
			return c["status"] == "True", fmt.Sprintf("Established=%v: %v", c["status"], c["message"])
		}
	}
	return false, "no Established condition yet"
}

func discovered(disco discovery.DiscoveryInterface, group, plural string, versions []any) (bool, string) {
	for _, v := range versions {
		v, _ := v.(map[string]any)
		if served, _ := v["served"].(bool); !served {
			continue
		}
		gv := group + "/" + fmt.Sprint(v["name"])
		list, err := disco.ServerResourcesForGroupVersion(gv)
		if err != nil {
			return false, fmt.Sprintf("discovery %s: %v", gv, err)
		}
		found := false
		for _, r := range list.APIResources {
			found = found || r.Name == plural
		}
		if !found {
			return false, fmt.Sprintf("%s not yet in discovery for %s", plural, gv)
		}
	}
	return true, ""
}

// readObjects reads every document of a multi-document YAML (or JSON) file.
// Duplicate keys are errors, as with kubectl; documents that are empty or
// have neither apiVersion nor kind are counted as skipped.
func readObjects(path string) ([]*unstructured.Unstructured, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var objs []*unstructured.Unstructured
	skipped := 0
	for i := 0; ; i++ {
		doc, err := r.Read()
		if err == io.EOF {
			return objs, skipped, nil
		}
		if err != nil {
			return nil, 0, err
		}
		data, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, 0, fmt.Errorf("document %d: %w", i, err)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			// A scalar or a list: not a Kubernetes object.
			skipped++
			continue
		}
		if m == nil {
			continue // comments only
		}
		if m["apiVersion"] == nil && m["kind"] == nil {
			skipped++
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}
