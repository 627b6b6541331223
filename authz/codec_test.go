package authz

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// envoyRequest is a CheckRequest as Envoy sends it for a browser's GET:
// peers, time, ~15 headers with a bearer token, a route extension.
func envoyRequest() *authv3.CheckRequest {
	h := map[string]string{
		":authority": "orders.example.com", ":method": "GET", ":path": "/orders/123?expand=items", ":scheme": "https",
		"accept": "application/json", "accept-encoding": "gzip, br", "accept-language": "en-GB,en;q=0.9",
		"authorization": "Bearer " + strings.Repeat("eyJhbGciOiJSUzI1NiJ9", 35),
		"cookie":        "theme=dark; lang=en", "user-agent": "Mozilla/5.0 (X11; Linux x86_64)",
		"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https", "x-request-id": "8a6f4c3e-1b2d-4e5f-9a8b-1",
		"x-envoy-expected-rq-timeout-ms": "15000", "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
	}
	addr := func(ip string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: addr("10.244.1.17", 52344), Principal: "spiffe://cluster.local/ns/web/sa/frontend"},
		Destination: &authv3.AttributeContext_Peer{Address: addr("10.244.2.9", 8080), Labels: map[string]string{"app": "orders"}},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: "13690189316398519123", Method: "GET", Headers: h, Path: h[":path"],
				Host: h[":authority"], Scheme: "https", Protocol: "HTTP/2", Size: -1,
			},
		},
		ContextExtensions: map[string]string{RouteExtension: "orders"},
	}}
}

func marshal(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// field encodes one length-delimited field.
func field(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
}

// nest wraps v as field path[len-1] of field path[len-2] ... of field path[0].
func nest(v []byte, path ...protowire.Number) []byte {
	for i := len(path) - 1; i >= 0; i-- {
		v = field(path[i], v)
	}
	return v
}

// checkRequestSeeds are encodings whose decoding must agree with the
// generated decoder's, accepted or refused.
func checkRequestSeeds(tb testing.TB) [][]byte {
	full := envoyRequest()
	h := full.Attributes.Request.Http
	h.Query, h.Fragment, h.Body, h.RawBody = "q=1", "top", `{"a":1}`, []byte{0, 1, 0xff}
	h.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "x-a", RawValue: []byte("1")}}}
	full.Attributes.TlsSession = &authv3.AttributeContext_TLSSession{Sni: "orders.example.com"}
	full.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"envoy.filters.http.jwt_authn": {Fields: map[string]*structpb.Value{"sub": structpb.NewStringValue("u-1")}}}}
	http := func(num protowire.Number, v []byte) []byte { return nest(field(num, v), 1, 4, 2) }
	entry := func(k, v string) []byte { return append(field(1, []byte(k)), field(2, []byte(v))...) }
	varint := func(num protowire.Number, x uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), x)
	}
	unknown := append(varint(99, 7), field(98, []byte("x"))...)
	base := marshal(tb, envoyRequest())
	return [][]byte{
		{},
		base,
		marshal(tb, full),
		marshal(tb, grpcRawRequest("cookie", "a=1", "Cookie", "b=2")),
		// A message field sent twice is merged; a scalar's last value wins.
		append(append([]byte{}, base...), marshal(tb, grpcRequest(map[string]string{"accept": "text/html", "x-new": "1"}))...),
		// Map entries: a repeated key (last wins), a missing value, a
		// missing key, an entry with an unknown field, an empty entry.
		append(append(append(append(http(3, entry("a", "1")), http(3, entry("a", "2"))...), http(3, field(1, []byte("novalue")))...),
			http(3, field(2, []byte("nokey")))...), http(3, append(entry("b", "3"), varint(7, 1)...))...),
		http(3, nil),
		nest(append(field(1, []byte("k")), field(2, []byte("v"))...), 1, 10),
		// Unknown fields at every level, kept.
		append(unknown, nest(append(unknown, field(1, []byte("id"))...), 1, 4, 2)...),
		nest(append(unknown, field(2, nil)...), 1, 4),
		nest(unknown, 1),
		// Known fields of the wrong wire type are unknown fields.
		nest(varint(2, 5), 1, 4, 2),
		nest(varint(3, 5), 1, 4, 2),
		varint(1, 1),
		nest(varint(4, 1), 1),
		nest(varint(10, 1), 1),
		// size is a varint; sent length-delimited it is unknown.
		nest(varint(9, 1<<63), 1, 4, 2),
		http(9, []byte("9")),
		// Invalid UTF-8 in a string, a map key, a map value, the route.
		http(4, []byte{'/', 0xff}),
		http(3, entry("a\xff", "1")),
		http(3, entry("a", "\xc3")),
		nest(entry("sidegate.route", "\xff"), 1, 10),
		// An invalid value replaced by a valid one is still refused.
		http(3, append(entry("a", "0\xff"), field(2, []byte("0"))...)),
		// Bytes may hold anything.
		http(12, []byte{0xff, 0xfe}),
		// Broken encodings.
		nest(append(protowire.AppendTag(nil, protowire.MaxValidNumber+1, protowire.VarintType), 0), 1, 4, 2, 3),
		{0x0a},
		{0x0a, 0x05, 0x22},
		nest([]byte{0x1a, 0x03, 0x0a}, 1, 4, 2),
		nest([]byte{0x0a, 0x80}, 1, 4, 2),
		{0x0c},             // a stray end-group
		{0x00, 0x00},       // field number 0
		{0x0b, 0x08, 0x01}, // an unterminated group
	}
}

// decodeBoth decodes b with decodeCheckRequest and with the generated
// decoder, and reports any difference.
func decodeBoth(t *testing.T, b []byte) (accepted bool) {
	t.Helper()
	var got, want authv3.CheckRequest
	gotErr := decodeCheckRequest(b, &got)
	wantErr := proto.Unmarshal(b, &want)
	shown := fmt.Sprintf("% x", b)
	if len(b) > 64 {
		shown = fmt.Sprintf("% x … (%d bytes)", b[:64], len(b))
	}
	switch {
	case (gotErr == nil) != (wantErr == nil):
		t.Fatalf("%s: decodeCheckRequest error %v, generated decoder error %v", shown, gotErr, wantErr)
	case gotErr == nil && !proto.Equal(&got, &want):
		t.Fatalf("%s: decodeCheckRequest\n%v\ngenerated decoder\n%v", shown, &got, &want)
	}
	return gotErr == nil
}

func TestDecodeCheckRequestAgreesWithProto(t *testing.T) {
	var accepted, refused int
	for i, b := range checkRequestSeeds(t) {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if decodeBoth(t, b) {
				accepted++
			} else {
				refused++
			}
		})
	}
	if accepted < 15 || refused < 8 {
		t.Errorf("%d seeds accepted and %d refused: the seeds no longer cover both", accepted, refused)
	}
}

func FuzzDecodeCheckRequest(f *testing.F) {
	for _, b := range checkRequestSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { decodeBoth(t, b) })
}

// TestDecodeCheckRequestDepth: a request nested just too deep for the
// generated decoder (metadata is a Struct of ListValues of Values...) is
// refused by decodeCheckRequest too, and one level less is accepted.
func TestDecodeCheckRequestDepth(t *testing.T) {
	deep := func(n int) []byte {
		v := structpb.NewNullValue()
		for range n {
			v = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{v}})
		}
		return marshal(t, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{MetadataContext: &corev3.Metadata{
			FilterMetadata: map[string]*structpb.Struct{"k": {Fields: map[string]*structpb.Value{"v": v}}}}}})
	}
	// The generated decoder's limit, in levels of lists.
	n := sort.Search(protowire.DefaultRecursionLimit, func(n int) bool {
		var req authv3.CheckRequest
		return proto.Unmarshal(deep(n), &req) != nil
	})
	if n == protowire.DefaultRecursionLimit {
		t.Fatal("the generated decoder took every depth")
	}
	for _, d := range []int{n - 1, n} {
		if accepted := decodeBoth(t, deep(d)); accepted != (d < n) {
			t.Errorf("%d levels: accepted %v", d, accepted)
		}
	}
}

// TestCheckCodecSplitMessage: a request gRPC hands over in pieces (one
// per received frame) decodes as one, and the pieces are not kept.
func TestCheckCodecSplitMessage(t *testing.T) {
	b := marshal(t, envoyRequest())
	var data mem.BufferSlice
	for chunk := range slices.Chunk(b, 100) {
		data = append(data, mem.SliceBuffer(chunk))
	}
	var req authv3.CheckRequest
	if err := (checkCodec{}).Unmarshal(data, &req); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&req, envoyRequest()) {
		t.Fatalf("decoded %v", &req)
	}
	for _, buf := range data {
		clear(buf.ReadOnlyData())
	}
	if got := req.Attributes.Request.Http.Headers[":authority"]; got != "orders.example.com" {
		t.Errorf("after the buffers were reused, :authority = %q", got)
	}
}

// TestCheckCodecOtherMessages: messages other than a CheckRequest (health
// checks, reflection) use the generated decoder.
func TestCheckCodecOtherMessages(t *testing.T) {
	want := &corev3.HeaderValue{Key: "k", Value: "v"}
	var got corev3.HeaderValue
	if err := (checkCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(marshal(t, want))}, &got); err != nil || !proto.Equal(&got, want) {
		t.Fatalf("decoded %v, %v; want %v", &got, err, want)
	}
}

// BenchmarkDecodeCheckRequest: Envoy's request, by the generated decoder
// and by sidegate's.
func BenchmarkDecodeCheckRequest(b *testing.B) {
	enc := marshal(b, envoyRequest())
	b.Run("generated", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req authv3.CheckRequest
			if err := proto.Unmarshal(enc, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sidegate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req authv3.CheckRequest
			if err := decodeCheckRequest(enc, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
