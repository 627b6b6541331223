package authz

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/sidegate/sidegate/jwks"
)

// grpcServer is a sidegate gRPC server on a real loopback listener, with a
// client connected to it and the test's own metrics registry.
type grpcServer struct {
	client authv3.AuthorizationClient
	conn   *grpc.ClientConn
	health *Health
	srv    *grpc.Server
	reg    *prometheus.Registry
}

func grpcStart(tb testing.TB, e *Engine) *grpcServer {
	tb.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		tb.Fatal(err)
	}
	gs, hs := NewGRPCServer(NewServer(e, m, nil))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		conn.Close()
		gs.Stop()
		if err := <-done; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return &grpcServer{client: authv3.NewAuthorizationClient(conn), conn: conn, health: hs, srv: gs, reg: reg}
}

func grpcCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// grpcRequest is a CheckRequest in Envoy's default form (headers map).
func grpcRequest(headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method:  "GET",
			Path:    "/orders",
			Host:    "orders.test",
			Headers: headers,
		}},
	}}
}

// grpcRawRequest is a CheckRequest in the encode_raw_headers form: an
// ordered header list with raw byte values, repeated names as separate
// entries.
func grpcRawRequest(kv ...string) *authv3.CheckRequest {
	hm := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/orders", HeaderMap: hm}},
	}}
}

func grpcCheck(tb testing.TB, s *grpcServer, req *authv3.CheckRequest) *authv3.CheckResponse {
	tb.Helper()
	resp, err := s.client.Check(grpcCtx(tb), req)
	if err != nil {
		tb.Fatalf("Check: gRPC error %v; a denial must be a CheckResponse", err)
	}
	return resp
}

// grpcOK asserts an allowed response and returns its headers to set.
func grpcOK(tb testing.TB, resp *authv3.CheckResponse) (map[string]string, *authv3.OkHttpResponse) {
	tb.Helper()
	if c := codes.Code(resp.GetStatus().GetCode()); c != codes.OK {
		tb.Fatalf("status %v (%s), want OK; denied %v", c, resp.GetStatus().GetMessage(), resp.GetDeniedResponse())
	}
	ok := resp.GetOkResponse()
	if ok == nil {
		tb.Fatalf("no OkHttpResponse: %v", resp)
	}
	set := map[string]string{}
	for _, h := range ok.GetHeaders() {
		if a := h.GetAppendAction(); a != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			tb.Errorf("header %s: append action %v, want OVERWRITE_IF_EXISTS_OR_ADD", h.GetHeader().GetKey(), a)
		}
		if h.GetAppend() != nil {
			tb.Errorf("header %s: deprecated append field set", h.GetHeader().GetKey())
		}
		if len(h.GetHeader().GetRawValue()) > 0 {
			tb.Errorf("header %s: raw_value set", h.GetHeader().GetKey())
		}
		if _, dup := set[h.GetHeader().GetKey()]; dup {
			tb.Errorf("header %s set twice", h.GetHeader().GetKey())
		}
		set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	for _, name := range ok.GetHeadersToRemove() {
		if _, both := set[name]; both {
			tb.Errorf("header %s is both set and removed (Envoy removes after setting)", name)
		}
	}
	return set, ok
}

// grpcDenied asserts a denial with this HTTP status, gRPC code and reason,
// and returns its WWW-Authenticate value.
func grpcDenied(tb testing.TB, resp *authv3.CheckResponse, status int, code codes.Code, reason string) string {
	tb.Helper()
	if c := codes.Code(resp.GetStatus().GetCode()); c != code {
		tb.Errorf("status code %v, want %v", c, code)
	}
	if resp.GetOkResponse() != nil {
		tb.Fatalf("OkHttpResponse on a denial: %v", resp)
	}
	den := resp.GetDeniedResponse()
	if den == nil {
		tb.Fatalf("no DeniedHttpResponse: %v", resp)
	}
	if got := int(den.GetStatus().GetCode()); got != status {
		tb.Errorf("HTTP status %d, want %d", got, status)
	}
	hs := map[string]string{}
	for _, h := range den.GetHeaders() {
		hs[strings.ToLower(h.GetHeader().GetKey())] = h.GetHeader().GetValue()
		if a := h.GetAppendAction(); a != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			tb.Errorf("denial header %s: append action %v", h.GetHeader().GetKey(), a)
		}
	}
	if ct := hs["content-type"]; ct != "application/json" {
		tb.Errorf("content-type %q", ct)
	}
	if cc := hs["cache-control"]; cc != "no-store" {
		tb.Errorf("cache-control %q", cc)
	}
	var body struct{ Error, Reason, Description string }
	if err := json.Unmarshal([]byte(den.GetBody()), &body); err != nil {
		tb.Fatalf("body %q: %v", den.GetBody(), err)
	}
	if body.Reason != reason || body.Error == "" || body.Description == "" {
		tb.Errorf("body %+v, want reason %q", body, reason)
	}
	if m := resp.GetStatus().GetMessage(); m != reason {
		tb.Errorf("status message %q, want %q", m, reason)
	}
	wa, ok := hs["www-authenticate"]
	if !ok {
		tb.Fatal("no www-authenticate")
	}
	return wa
}

// grpcMetric reads a series from the registry: a counter's value or a
// histogram's sample count. It fails when the series does not exist.
func grpcMetric(tb testing.TB, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	tb.Helper()
	if name == "sidegate_decisions_total" {
		// The default route, enforced, unless the test says otherwise.
		labels = maps.Clone(labels)
		for k, v := range map[string]string{"route": "default", "enforced": "true"} {
			if _, ok := labels[k]; !ok {
				labels[k] = v
			}
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if len(got) != len(labels) {
				continue
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount())
			}
			tb.Fatalf("%s: unexpected type %v", name, mf.GetType())
		}
	}
	tb.Fatalf("no series %s%v", name, labels)
	return 0
}

// grpcNoKeys is a key source whose issuer has no usable key set yet.
type grpcNoKeys struct{}

func (grpcNoKeys) Lookup(context.Context, string, string) (*jwks.Key, error) {
	return nil, jwks.ErrKeysUnavailable
}

func grpcFixture(tb testing.TB) *fixture {
	return newFixture(tb, func(c *Config) {
		c.ForwardClaims = append(c.ForwardClaims, ForwardClaim{Header: "x-email", Claim: "email"})
	})
}

func TestGRPCAllowed(t *testing.T) {
	f := grpcFixture(t)
	s := grpcStart(t, f.engine)
	tok := f.token(t, "ES256", f.claims(), nil) // sub, no email
	payload := strings.Split(tok, ".")[1]

	tests := []struct {
		name    string
		headers map[string]string
		remove  []string
	}{
		{"bearer", bearer(tok), nil},
		{"cookie", map[string]string{"cookie": "theme=dark; session=" + tok}, nil},
		{"client sent identity headers", map[string]string{
			"authorization": "Bearer " + tok,
			"x-user-id":     "admin",
			"x-email":       "admin@evil.test",
			"x-jwt-payload": "eyJzdWIiOiJhZG1pbiJ9",
			"x-other":       "kept",
		}, []string{"x-email"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, ok := grpcOK(t, grpcCheck(t, s, grpcRequest(tt.headers)))
			want := map[string]string{"x-user-id": "user-1", "x-jwt-payload": payload}
			if len(set) != len(want) || set["x-user-id"] != want["x-user-id"] || set["x-jwt-payload"] != want["x-jwt-payload"] {
				t.Errorf("headers %v, want %v", set, want)
			}
			if got := ok.GetHeadersToRemove(); !slices.Equal(got, tt.remove) {
				t.Errorf("headers_to_remove %v, want %v", got, tt.remove)
			}
		})
	}
}

func TestGRPCDenied(t *testing.T) {
	f := grpcFixture(t)
	s := grpcStart(t, f.engine)
	good := f.token(t, "ES256", f.claims(), nil)
	c := f.claims()
	c["iat"], c["exp"] = testNow.Add(-2*time.Hour).Unix(), testNow.Add(-time.Hour).Unix()
	expired := f.token(t, "ES256", c, nil)

	tests := []struct {
		name      string
		req       *authv3.CheckRequest
		reason    string
		challenge string
	}{
		{"no token", grpcRequest(map[string]string{"x-user-id": "admin"}), "no_token", `Bearer realm="sidegate"`},
		{"expired", grpcRequest(bearer(expired)), "expired", `Bearer realm="sidegate", error="invalid_token", error_description="the token has expired"`},
		{"Basic", grpcRequest(map[string]string{"authorization": "Basic dXNlcjpwYXNz"}), "bad_authorization_header", `Bearer realm="sidegate", error="invalid_request", error_description="the Authorization header must be exactly one Bearer token"`},
		{"duplicate cookie", grpcRequest(map[string]string{"cookie": "session=" + good + "; session=" + good}), "duplicate_cookie", ""},
		{"garbage", grpcRequest(bearer("a.b.c")), "malformed_token", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wa := grpcDenied(t, grpcCheck(t, s, tt.req), 401, codes.Unauthenticated, tt.reason)
			if tt.challenge != "" && wa != tt.challenge {
				t.Errorf("www-authenticate %q, want %q", wa, tt.challenge)
			}
			if !strings.HasPrefix(wa, `Bearer realm="sidegate"`) {
				t.Errorf("www-authenticate %q", wa)
			}
		})
	}

	t.Run("keys unavailable", func(t *testing.T) {
		e, err := NewEngine(f.cfg, grpcNoKeys{}, nil, func() time.Time { return testNow })
		if err != nil {
			t.Fatal(err)
		}
		s := grpcStart(t, e)
		grpcDenied(t, grpcCheck(t, s, grpcRequest(bearer(good))), 503, codes.Unavailable, "keys_unavailable")
	})
}

func TestGRPCHeaderMap(t *testing.T) {
	f := grpcFixture(t)
	s := grpcStart(t, f.engine)
	tok := f.token(t, "EdDSA", f.claims(), nil)
	noSub := f.claims()
	delete(noSub, "sub")
	noSubTok := f.token(t, "EdDSA", noSub, nil)

	t.Run("repeated cookie entries", func(t *testing.T) {
		resp := grpcCheck(t, s, grpcRawRequest(":path", "/orders", "cookie", "theme=dark", "cookie", "session="+tok, "cookie", "lang=en"))
		set, _ := grpcOK(t, resp)
		if set["x-user-id"] != "user-1" {
			t.Errorf("headers %v", set)
		}
	})
	t.Run("mixed-case authorization", func(t *testing.T) {
		grpcOK(t, grpcCheck(t, s, grpcRawRequest("Authorization", "Bearer "+tok)))
	})
	t.Run("value instead of raw_value", func(t *testing.T) {
		req := grpcRawRequest()
		req.Attributes.Request.Http.HeaderMap.Headers = []*corev3.HeaderValue{{Key: "authorization", Value: "Bearer " + tok}}
		grpcOK(t, grpcCheck(t, s, req))
	})
	t.Run("raw_value wins over value", func(t *testing.T) {
		req := grpcRawRequest()
		req.Attributes.Request.Http.HeaderMap.Headers = []*corev3.HeaderValue{{Key: "authorization", Value: "Bearer " + tok, RawValue: []byte("Basic x")}}
		grpcDenied(t, grpcCheck(t, s, req), 401, codes.Unauthenticated, "bad_authorization_header")
	})
	t.Run("duplicate cookie across entries", func(t *testing.T) {
		grpcDenied(t, grpcCheck(t, s, grpcRawRequest("cookie", "session="+tok, "cookie", "session="+tok)), 401, codes.Unauthenticated, "duplicate_cookie")
	})
	t.Run("two authorization entries", func(t *testing.T) {
		grpcDenied(t, grpcCheck(t, s, grpcRawRequest("authorization", "Bearer "+tok, "authorization", "Bearer "+tok)), 401, codes.Unauthenticated, "bad_authorization_header")
	})
	t.Run("raw bytes that are not UTF-8", func(t *testing.T) {
		grpcDenied(t, grpcCheck(t, s, grpcRawRequest("authorization", "Bearer \x00\xff\xfe"+tok)), 401, codes.Unauthenticated, "bad_authorization_header")
	})
	t.Run("client-sent identity header removed", func(t *testing.T) {
		set, ok := grpcOK(t, grpcCheck(t, s, grpcRawRequest("authorization", "Bearer "+noSubTok, "X-User-Id", "admin", "x-user-id", "root")))
		if _, has := set["x-user-id"]; has {
			t.Errorf("x-user-id set from a token without sub: %v", set)
		}
		if got := ok.GetHeadersToRemove(); !slices.Equal(got, []string{"x-user-id"}) {
			t.Errorf("headers_to_remove %v, want [x-user-id]", got)
		}
	})
}

func TestGRPCHostile(t *testing.T) {
	f := grpcFixture(t)
	s := grpcStart(t, f.engine)
	tok := f.token(t, "ES256", f.claims(), nil)
	huge := strings.Repeat("a", 900<<10) // under the 1 MiB message limit

	many := map[string]string{}
	var manyRaw []string
	for i := range 10_000 {
		many[fmt.Sprintf("x-h-%d", i)] = "v"
		manyRaw = append(manyRaw, "cookie", fmt.Sprintf("c%d=v", i))
	}
	manyWithToken := map[string]string{"authorization": "Bearer " + tok}
	for k, v := range many {
		manyWithToken[k] = v
	}

	tests := []struct {
		name   string
		req    *authv3.CheckRequest
		reason string
	}{
		{"empty request", &authv3.CheckRequest{}, "no_token"},
		{"no request", &authv3.CheckRequest{Attributes: &authv3.AttributeContext{}}, "no_token"},
		{"no http", &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{}}}, "no_token"},
		{"empty header map", grpcRawRequest(), "no_token"},
		{"huge bearer", grpcRequest(map[string]string{"authorization": "Bearer " + huge}), "token_too_large"},
		{"huge cookie", grpcRequest(map[string]string{"cookie": "session=" + huge}), "token_too_large"},
		{"huge Authorization junk", grpcRequest(map[string]string{"authorization": "Bearer " + huge + " x"}), "bad_authorization_header"},
		{"huge unrelated header", grpcRequest(map[string]string{"x-junk": huge}), "no_token"},
		{"10k headers", grpcRequest(many), "no_token"},
		{"10k header_map entries", grpcRawRequest(manyRaw...), "no_token"},
		{"10k cookie entries and a duplicate", grpcRawRequest(append(slices.Clone(manyRaw), "cookie", "session="+tok, "cookie", "session=x")...), "duplicate_cookie"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			grpcDenied(t, grpcCheck(t, s, tt.req), 401, codes.Unauthenticated, tt.reason)
		})
	}
	// Noise around a good token does not stop it.
	t.Run("10k headers and a token", func(t *testing.T) {
		grpcOK(t, grpcCheck(t, s, grpcRequest(manyWithToken)))
	})
	t.Run("10k cookie entries and a token", func(t *testing.T) {
		grpcOK(t, grpcCheck(t, s, grpcRawRequest(append(slices.Clone(manyRaw), "cookie", "session="+tok)...)))
	})
}

// TestGRPCHeaderMapLinear checks that joining repeated header_map entries
// costs memory linear in the request: a message at the 1 MiB limit holds
// some 70,000 one-pair cookie entries, and joining them one by one would
// copy gigabytes. Bytes allocated are asserted, not time.
func TestGRPCHeaderMapLinear(t *testing.T) {
	const n = 60_000
	hm := &corev3.HeaderMap{}
	for range n {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: "cookie", RawValue: []byte("c=v")})
	}
	hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: "authorization", Value: "Bearer x"})
	h := &authv3.AttributeContext_HttpRequest{HeaderMap: hm}

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	m := envoyHeaders(h)
	runtime.ReadMemStats(&after)

	if want := strings.Repeat("c=v; ", n-1) + "c=v"; m["cookie"] != want {
		t.Errorf("cookie joined to %d bytes, want %d", len(m["cookie"]), len(want))
	}
	if m["authorization"] != "Bearer x" {
		t.Errorf("authorization %q", m["authorization"])
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
		t.Errorf("joining %d entries allocated %d MiB", n, alloc>>20)
	}

	// The same request over gRPC is an ordinary denial.
	f := grpcFixture(t)
	s := grpcStart(t, f.engine)
	grpcDenied(t, grpcCheck(t, s, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: h},
	}}), 401, codes.Unauthenticated, "malformed_token")
}

func TestGRPCHealth(t *testing.T) {
	f := grpcFixture(t)
	s := grpcStart(t, f.engine)
	hc := healthpb.NewHealthClient(s.conn)
	status := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := hc.Check(grpcCtx(t), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("health %q: %v", service, err)
		}
		return resp.GetStatus()
	}
	for _, svc := range []string{"", AuthorizationService} {
		if got := status(svc); got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health %q initially %v, want NOT_SERVING", svc, got)
		}
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(AuthorizationService, healthpb.HealthCheckResponse_SERVING)
	for _, svc := range []string{"", AuthorizationService} {
		if got := status(svc); got != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q after SetServingStatus %v, want SERVING", svc, got)
		}
	}
}

func TestGRPCReflection(t *testing.T) {
	f := grpcFixture(t)
	s := grpcStart(t, f.engine)
	stream, err := reflectionpb.NewServerReflectionClient(s.conn).ServerReflectionInfo(grpcCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	for _, want := range []string{AuthorizationService, "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	// grpcurl also needs the descriptors, not just the name.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: AuthorizationService}}); err != nil {
		t.Fatal(err)
	}
	resp, err = stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if e := resp.GetErrorResponse(); e != nil {
		t.Fatalf("descriptor for %s: %v", AuthorizationService, e)
	}
	if len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("no descriptor for %s", AuthorizationService)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
}

func TestGRPCMetrics(t *testing.T) {
	f := grpcFixture(t)
	s := grpcStart(t, f.engine)
	tok := f.token(t, "ES256", f.claims(), nil)
	c := f.claims()
	c["iat"], c["exp"] = testNow.Add(-2*time.Hour).Unix(), testNow.Add(-time.Hour).Unix()
	expired := f.token(t, "ES256", c, nil)

	// Every series exists at zero before the first check: each reason on
	// the default route, and the two denials of requests no route could
	// be chosen for.
	if n, err := testutil.GatherAndCount(s.reg, "sidegate_decisions_total"); err != nil || n != len(Reasons())+2 {
		t.Errorf("%d decision series before any check (%v), want %d", n, err, len(Reasons())+2)
	}
	if got := grpcMetric(t, s.reg, "sidegate_decisions_total", map[string]string{"decision": "deny", "reason": "revoked"}); got != 0 {
		t.Errorf("revoked = %v before any check", got)
	}

	for range 3 {
		grpcOK(t, grpcCheck(t, s, grpcRequest(bearer(tok))))
	}
	for range 2 {
		grpcCheck(t, s, grpcRequest(nil))
	}
	grpcCheck(t, s, grpcRequest(bearer(expired)))

	counts := []struct {
		decision, reason string
		want             float64
	}{
		{"allow", "ok", 3},
		{"deny", "no_token", 2},
		{"deny", "expired", 1},
		{"deny", "bad_signature", 0},
	}
	for _, c := range counts {
		if got := grpcMetric(t, s.reg, "sidegate_decisions_total", map[string]string{"decision": c.decision, "reason": c.reason}); got != c.want {
			t.Errorf("sidegate_decisions_total{decision=%q,reason=%q} = %v, want %v", c.decision, c.reason, got, c.want)
		}
	}
	durations := []struct {
		transport, decision string
		want                float64
	}{
		{"grpc", "allow", 3},
		{"grpc", "deny", 3},
		{"http", "allow", 0},
		{"http", "deny", 0},
	}
	for _, d := range durations {
		if got := grpcMetric(t, s.reg, "sidegate_check_duration_seconds", map[string]string{"transport": d.transport, "decision": d.decision}); got != d.want {
			t.Errorf("sidegate_check_duration_seconds{transport=%q,decision=%q} count = %v, want %v", d.transport, d.decision, got, d.want)
		}
	}
	problems, err := testutil.GatherAndLint(s.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

// TestGRPCHealthWatchEndsOnEndWatches: a client's health Watch stream must
// not hold GracefulStop; EndWatches ends it, and GracefulStop returns.
func TestGRPCHealthWatchEndsOnEndWatches(t *testing.T) {
	s := grpcStart(t, newFixture(t, nil).engine)
	stream, err := healthpb.NewHealthClient(s.conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := stream.Recv(); err != nil || first.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("first Watch update = %v, %v; want NOT_SERVING", first, err)
	}
	s.health.Shutdown()
	s.health.EndWatches()
	for {
		_, err := stream.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Watch ended with %v, want Unavailable", err)
		}
		break
	}
	stopped := make(chan struct{})
	go func() { s.srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("GracefulStop still waiting after the Watch stream ended")
	}
}
