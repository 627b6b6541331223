package authz

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// AuthorizationService is the gRPC service name Envoy calls.
const AuthorizationService = "envoy.service.auth.v3.Authorization"

// streamWorkers is the fewest long-lived goroutines that run checks.
const streamWorkers = 64

// ServerOptions are the options of every gRPC server sidegate runs.
// Keepalive and stream limits suit Envoy, which multiplexes many checks
// over few long-lived connections. `sidegate bench` gives its do-nothing
// floor server the same ones.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(1024),
		// Above Envoy's own limits (60 KiB of headers by default, plus any
		// with_request_body), so a real request is never a gRPC error, which
		// failure_mode_allow: true would turn into an allow.
		grpc.MaxRecvMsgSize(8 << 20),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    30 * time.Second,
			Timeout: 10 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		// Checks run on a pool of long-lived goroutines instead of one new
		// goroutine each. Verifying a signature needs several KiB of
		// stack (the RSA code keeps its big numbers there); a new
		// goroutine grows and copies its stack for every check, which
		// cost 7% of the CPU with unique tokens. When every worker is
		// busy, grpc-go starts a goroutine as before, so nothing queues;
		// hence at least streamWorkers, enough for the checks Envoy keeps
		// in flight under load (4 per CPU left 4% of the CPU in stack
		// growth with 32 in flight), for ~2 MiB of parked stacks.
		grpc.NumStreamWorkers(uint32(max(4*runtime.GOMAXPROCS(0), streamWorkers))),
	}
}

// NewGRPCServer returns a gRPC server with the Authorization service, the
// gRPC health service (with the returned health server, which the caller
// flips as readiness changes) and server reflection (so grpcurl works).
// It decodes CheckRequests with checkCodec (grpc.ForceServerCodecV2 is
// marked experimental in grpc-go: a grpc-go upgrade must keep the codec
// tests passing).
func NewGRPCServer(s *Server, opts ...grpc.ServerOption) (*grpc.Server, *Health) {
	base := append(ServerOptions(), grpc.ForceServerCodecV2(checkCodec{}))
	gs := grpc.NewServer(append(base, opts...)...)
	authv3.RegisterAuthorizationServer(gs, s)
	hs := &Health{Server: health.NewServer(), done: make(chan struct{})}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus(AuthorizationService, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return gs, hs
}

// Health is grpc-go's health service, plus EndWatches: Watch streams
// (opened by clients that use gRPC health checking) would otherwise hold
// GracefulStop until its timeout, and then every in-flight Check would be
// cut along with them.
type Health struct {
	*health.Server
	done chan struct{}
	once sync.Once
}

// Watch is health.Server's Watch, ended by EndWatches.
func (h *Health) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-h.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := h.Server.Watch(req, watchStream{stream, ctx})
	if stream.Context().Err() == nil && ctx.Err() != nil {
		return status.Error(codes.Unavailable, "server shutting down")
	}
	return err
}

// EndWatches ends every Watch stream, now and later. Call it after
// Shutdown (which reports NOT_SERVING to the watchers) and before
// grpc.Server.GracefulStop.
func (h *Health) EndWatches() { h.once.Do(func() { close(h.done) }) }

type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (w watchStream) Context() context.Context { return w.ctx }

// Check implements envoy.service.auth.v3.Authorization. A denial is a
// normal CheckResponse; the error return is reserved for sidegate failing.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	attrs := req.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	d := s.decide(ctx, TransportGRPC, Input{
		Headers: envoyHeaders(h),
		Method:  h.GetMethod(),
		Host:    h.GetHost(),
		Path:    h.GetPath(),
		Route:   attrs.GetContextExtensions()[RouteExtension],
	})
	return checkResponse(&d), nil
}

// RouteExtension is the context extension by which Envoy names the route
// of a request (ExtAuthzPerRoute.check_settings.context_extensions).
const RouteExtension = "sidegate.route"

// envoyHeaders returns the request's headers as a lower-case map. Envoy
// sends either the headers map, or, with encode_raw_headers, a header list
// whose repeated entries are joined here the way Envoy joins them.
func envoyHeaders(h *authv3.AttributeContext_HttpRequest) map[string]string {
	if m := h.GetHeaders(); len(m) > 0 || h.GetHeaderMap() == nil {
		return m
	}
	list := h.GetHeaderMap().GetHeaders()
	m := make(map[string]string, len(list))
	// Repeated names are collected and joined once: joining as they come
	// would copy the value so far on every repeat, quadratic in a hostile
	// list of many small entries.
	var more map[string][]string
	for _, hv := range list {
		k := strings.ToLower(hv.GetKey())
		v := hv.GetValue()
		if raw := hv.GetRawValue(); len(raw) > 0 {
			v = string(raw)
		}
		if prev, ok := m[k]; ok {
			if more == nil {
				more = make(map[string][]string)
			}
			if more[k] == nil {
				more[k] = []string{prev}
			}
			more[k] = append(more[k], v)
			continue
		}
		m[k] = v
	}
	for k, vs := range more {
		sep := ","
		if k == "cookie" {
			sep = "; "
		}
		m[k] = strings.Join(vs, sep)
	}
	return m
}

var grpcCode = map[int]codes.Code{
	401: codes.Unauthenticated,
	403: codes.PermissionDenied,
	503: codes.Unavailable,
}

func checkResponse(d *Decision) *authv3.CheckResponse {
	if d.Allowed {
		// A cached token's response is built once and shared: the common
		// case, nothing to remove, is then no allocation here at all. It is
		// kept from the token's first hit (d.Claims is then the entry's),
		// not from its first verification: a token used once never needs
		// it, and the response is most of an entry's memory (100k unique
		// tokens held 80 MB of them).
		if v := d.cached; v != nil && d.Claims == v.claims && len(d.Remove) == 0 {
			if r := v.grpcOK.Load(); r != nil {
				return r
			}
			r := allowResponse(d)
			v.grpcOK.Store(r)
			return r
		}
		return allowResponse(d)
	}
	// A requirement's denial names its route and scopes: not shared.
	if re := d.requirement(); re != nil {
		return buildDenyResponse(d.Reason, d.challenge(re), d.body(re))
	}
	return denyResponse(d.Reason)
}

// allowResponse is the OK response setting d's headers and removing its
// Remove list.
func allowResponse(d *Decision) *authv3.CheckResponse {
	ok := &authv3.OkHttpResponse{HeadersToRemove: d.Remove}
	if len(d.Headers) > 0 {
		ok.Headers = make([]*corev3.HeaderValueOption, len(d.Headers))
		for i, h := range d.Headers {
			ok.Headers[i] = &corev3.HeaderValueOption{
				Header:       &corev3.HeaderValue{Key: h.Name, Value: h.Value},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}
		}
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}
}

// denyResponses holds the denial of each reason, built once: a denial
// depends on its reason alone, and a flood of bad tokens should cost as
// little to answer as it can.
var denyResponses sync.Map // Reason.Code → *authv3.CheckResponse

// denyResponse is the denial for reason r, shared.
func denyResponse(r Reason) *authv3.CheckResponse {
	if resp, ok := denyResponses.Load(r.Code); ok {
		return resp.(*authv3.CheckResponse)
	}
	resp, _ := denyResponses.LoadOrStore(r.Code, buildDenyResponse(r, r.Challenge(), r.Body()))
	return resp.(*authv3.CheckResponse)
}

func buildDenyResponse(r Reason, challenge, body string) *authv3.CheckResponse {
	code, ok := grpcCode[r.Status]
	if !ok {
		code = codes.Internal
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code), Message: r.Code},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode(r.Status)},
			Headers: []*corev3.HeaderValueOption{
				denyHeader("www-authenticate", challenge),
				denyHeader("content-type", "application/json"),
				denyHeader("cache-control", "no-store"),
			},
			Body: body,
		}},
	}
}

func denyHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}
