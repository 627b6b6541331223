package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// httpClient is a client for loopback servers: no proxy from the
// environment, a timeout on every request, idle connections closed at the
// end of the test.
func httpClient(t *testing.T) *http.Client {
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// do sends a request with the given headers and body, and returns status,
// headers and body.
func do(c *http.Client, method, url string, headers map[string]string, body []byte) (int, http.Header, string, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		return 0, nil, "", err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header, string(raw), err
}

// get sends a GET with the given headers and returns status, headers and body.
func get(c *http.Client, url string, headers map[string]string) (int, http.Header, string, error) {
	return do(c, http.MethodGet, url, headers, nil)
}

// dialGRPC opens a client connection over real TCP, closed at test end.
func dialGRPC(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithNoProxy()}, opts...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// checkRequest is what Envoy sends for GET /orders/42 with these headers.
func checkRequest(headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":authority": "orders.example.com", ":method": "GET", ":path": "/orders/42", "user-agent": "e2e"}
	for k, v := range headers {
		h[strings.ToLower(k)] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/orders/42", Host: "orders.example.com", Scheme: "https", Protocol: "HTTP/1.1",
			Headers: h,
		}},
	}}
}

// check calls Authorization/Check with a deadline.
func check(t *testing.T, c authv3.AuthorizationClient, headers map[string]string) (*authv3.CheckResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return c.Check(ctx, checkRequest(headers))
}

// okHeaders returns the headers an allowed CheckResponse sets, failing the
// test unless every one overwrites (never appends).
func okHeaders(t *testing.T, resp *authv3.CheckResponse) map[string]string {
	t.Helper()
	ok := resp.GetOkResponse()
	if ok == nil || codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		t.Fatalf("want an OK response, got %v", resp)
	}
	out := map[string]string{}
	for _, h := range ok.GetHeaders() {
		if a := h.GetAppendAction(); a != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("header %s: append action %v, want OVERWRITE_IF_EXISTS_OR_ADD", h.GetHeader().GetKey(), a)
		}
		if h.GetAppend().GetValue() {
			t.Errorf("header %s: deprecated append=true", h.GetHeader().GetKey())
		}
		out[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return out
}

// denial is what a denied check must look like on either transport.
type denial struct {
	status int    // HTTP status
	err    string // RFC 6750 error attribute; "" when no credentials were sent
	reason string // stable reason code
}

// body is the JSON body of a denial.
type body struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
}

// checkChallenge checks a WWW-Authenticate value against the denial.
func (d denial) checkChallenge(www string) error {
	if d.err == "" {
		if www != `Bearer realm="sidegate"` {
			return fmt.Errorf("WWW-Authenticate %q, want %q", www, `Bearer realm="sidegate"`)
		}
		return nil
	}
	if !strings.HasPrefix(www, `Bearer realm="sidegate"`) || !strings.Contains(www, `error="`+d.err+`"`) || !strings.Contains(www, `error_description="`) {
		return fmt.Errorf("WWW-Authenticate %q, want Bearer realm=\"sidegate\" with error=%q and an error_description", www, d.err)
	}
	return nil
}

// checkBody checks the JSON body against the denial.
func (d denial) checkBody(raw string) error {
	var b body
	if err := json.Unmarshal([]byte(raw), &b); err != nil {
		return fmt.Errorf("body %q is not JSON: %v", raw, err)
	}
	if b.Reason != d.reason {
		return fmt.Errorf("body reason %q, want %q (body %s)", b.Reason, d.reason, raw)
	}
	if d.err != "" && b.Error != d.err {
		return fmt.Errorf("body error %q, want %q (body %s)", b.Error, d.err, raw)
	}
	return nil
}

// httpErr says how an HTTP check's answer differs from the denial, or nil.
func (d denial) httpErr(code int, hdr http.Header, raw string) error {
	var errs []error
	if code != d.status {
		errs = append(errs, fmt.Errorf("HTTP status %d, want %d (body %s)", code, d.status, raw))
	}
	errs = append(errs, d.checkChallenge(hdr.Get("WWW-Authenticate")), d.checkBody(raw))
	if v := hdr.Get("X-User-Id"); v != "" {
		errs = append(errs, fmt.Errorf("a denial carries X-User-Id %q", v))
	}
	return errors.Join(errs...)
}

// assertHTTP checks an HTTP check's denial.
func (d denial) assertHTTP(t *testing.T, code int, hdr http.Header, raw string) {
	t.Helper()
	if err := d.httpErr(code, hdr, raw); err != nil {
		t.Error(err)
	}
}

var grpcCodeFor = map[int]codes.Code{401: codes.Unauthenticated, 403: codes.PermissionDenied, 503: codes.Unavailable}

// grpcErr says how a gRPC check's answer differs from the denial, or nil:
// a denial is a normal CheckResponse, never an error, carrying the same
// status, challenge and body as over HTTP.
func (d denial) grpcErr(resp *authv3.CheckResponse, err error) error {
	if err != nil {
		return fmt.Errorf("a denial must be a CheckResponse, got gRPC error %v", err)
	}
	den := resp.GetDeniedResponse()
	if den == nil {
		return fmt.Errorf("want a DeniedHttpResponse, got %v", resp)
	}
	var errs []error
	if got := codes.Code(resp.GetStatus().GetCode()); got != grpcCodeFor[d.status] {
		errs = append(errs, fmt.Errorf("CheckResponse.status %v, want %v", got, grpcCodeFor[d.status]))
	}
	if got := int(den.GetStatus().GetCode()); got != d.status {
		errs = append(errs, fmt.Errorf("DeniedHttpResponse status %d, want %d", got, d.status))
	}
	hdr := map[string]string{}
	for _, h := range den.GetHeaders() {
		hdr[strings.ToLower(h.GetHeader().GetKey())] = h.GetHeader().GetValue()
	}
	errs = append(errs, d.checkChallenge(hdr["www-authenticate"]), d.checkBody(den.GetBody()))
	return errors.Join(errs...)
}

// assertGRPC checks a gRPC check's denial.
func (d denial) assertGRPC(t *testing.T, resp *authv3.CheckResponse, err error) {
	t.Helper()
	if err := d.grpcErr(resp, err); err != nil {
		t.Error(err)
	}
}

// allowedHTTPErr says how an HTTP check's answer differs from allowing sub.
func allowedHTTPErr(code int, hdr http.Header, raw, sub string) error {
	if code != http.StatusOK || hdr.Get("X-User-Id") != sub {
		return fmt.Errorf("HTTP %d, X-User-Id %q; want 200 and %q (body %s)", code, hdr.Get("X-User-Id"), sub, raw)
	}
	return nil
}

// allowedGRPCErr says how a gRPC check's answer differs from allowing sub.
func allowedGRPCErr(resp *authv3.CheckResponse, err error, sub string) error {
	switch {
	case err != nil:
		return fmt.Errorf("gRPC error %v, want an OK response for %q", err, sub)
	case resp.GetOkResponse() == nil || codes.Code(resp.GetStatus().GetCode()) != codes.OK:
		return fmt.Errorf("want an OK response for %q, got %v", sub, resp)
	case userOf(resp) != sub:
		return fmt.Errorf("gRPC x-user-id %q, want %q", userOf(resp), sub)
	}
	return nil
}

// metrics is one scrape of /metrics: series ("name{k="v",...}", labels
// sorted) to value.
type metrics map[string]float64

var labelRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

func scrape(t *testing.T, c *http.Client, admin string) metrics {
	t.Helper()
	m, err := scrapeErr(c, admin)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// scrapeErr is scrape for goroutines that must not fail the test themselves.
func scrapeErr(c *http.Client, admin string) (metrics, error) {
	code, _, text, err := get(c, "http://"+admin+"/metrics", nil)
	if err != nil || code != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %d %v", code, err)
	}
	m := metrics{}
	for line := range strings.SplitSeq(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		name, labels, _ := strings.Cut(line[:i], "{")
		m[seriesKey(name, parseLabels(labels))] = v
	}
	return m, nil
}

func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for _, g := range labelRE.FindAllStringSubmatch(s, -1) {
		out[g[1]] = g[2]
	}
	return out
}

func seriesKey(name string, labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, labels[k])
	}
	b.WriteByte('}')
	return b.String()
}

// get returns the value of one series and whether it exists. A
// sidegate_decisions_total series is on the default route, enforced,
// unless labels say otherwise.
func (m metrics) get(name string, labels map[string]string) (float64, bool) {
	if name == "sidegate_decisions_total" {
		labels = maps.Clone(labels)
		for k, v := range map[string]string{"route": "default", "enforced": "true"} {
			if _, ok := labels[k]; !ok {
				labels[k] = v
			}
		}
	}
	v, ok := m[seriesKey(name, labels)]
	return v, ok
}

// sum adds every series of a metric.
func (m metrics) sum(name string) float64 {
	var s float64
	for k, v := range m {
		if strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}
