package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/nats-io/nats-server/v2/server"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
)

// TestEnvoyBootstrap loads manifests/envoy/envoy.yaml into go-control-plane's
// Bootstrap type (no Envoy binary can run here): every field and every
// typed_config must be known, the message must pass its own validation,
// and the ext_authz filter must fail closed and call sidegate over gRPC.
func TestEnvoyBootstrap(t *testing.T) {
	raw, err := os.ReadFile("../manifests/envoy/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &b); err != nil {
		t.Fatalf("not a valid Envoy v3 bootstrap: %v", err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("bootstrap fails validation: %v", err)
	}
	var found bool
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
					continue
				}
				for _, hf := range hcm.GetHttpFilters() {
					var ea extauthzv3.ExtAuthz
					if hf.GetTypedConfig().UnmarshalTo(&ea) != nil {
						continue
					}
					found = true
					if ea.GetFailureModeAllow() {
						t.Error("ext_authz failure_mode_allow is true: a sidegate failure would allow requests")
					}
					if ea.GetGrpcService().GetEnvoyGrpc().GetClusterName() != "sidegate" {
						t.Errorf("ext_authz calls %v, want the sidegate cluster over gRPC", ea.GetGrpcService())
					}
				}
			}
		}
	}
	if !found {
		t.Fatal("no ext_authz filter in the bootstrap")
	}
}

// TestNATSStreamDefinition: manifests/nats/stream.json decodes into
// nats-server's own StreamConfig with no unknown field, captures sidegate's
// subject and keeps events at least the default token lifetime.
func TestNATSStreamDefinition(t *testing.T) {
	raw, err := os.ReadFile("../manifests/nats/stream.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var sc server.StreamConfig
	if err := dec.Decode(&sc); err != nil {
		t.Fatalf("not a nats-server StreamConfig: %v", err)
	}
	if sc.Name != "SIDEGATE_REVOCATIONS" || len(sc.Subjects) != 1 || sc.Subjects[0] != "sidegate.revocations" {
		t.Errorf("stream %q captures %v", sc.Name, sc.Subjects)
	}
	if sc.MaxAge < 24*time.Hour {
		t.Errorf("max_age %s is shorter than the default tokens.max_lifetime (24h)", sc.MaxAge)
	}
}
