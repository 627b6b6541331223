package main

import (
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// answerSeeds are encoded CheckResponses: sidegate-shaped allows and
// denials, the floor's bare OK, and encodings a generated decoder reads
// although they are unusual (unknown fields, a status sent twice).
func answerSeeds(t testing.TB) [][]byte {
	seeds := [][]byte{
		{}, // an empty CheckResponse: no status, code 0
		mustMarshal(t, &authv3.CheckResponse{Status: &rpcstatus.Status{}}),
		mustMarshal(t, answerLike(codes.OK)),
		mustMarshal(t, answerLike(codes.Unauthenticated)),
		mustMarshal(t, answerLike(codes.PermissionDenied)),
		mustMarshal(t, &authv3.CheckResponse{Status: &rpcstatus.Status{Code: -1, Message: "negative"}}),
	}
	denied := mustMarshal(t, answerLike(codes.Unauthenticated))
	// An unknown field of each wire type before the status.
	unknown := protowire.AppendTag(nil, 99, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 7)
	unknown = protowire.AppendTag(unknown, 98, protowire.Fixed32Type)
	unknown = protowire.AppendFixed32(unknown, 7)
	unknown = protowire.AppendTag(unknown, 97, protowire.BytesType)
	unknown = protowire.AppendString(unknown, "x")
	seeds = append(seeds, append(unknown, denied...))
	// A message field sent twice is merged: the first status's message
	// survives the second's code.
	first := mustMarshal(t, &authv3.CheckResponse{Status: &rpcstatus.Status{Code: 16, Message: "first"}})
	second := mustMarshal(t, &authv3.CheckResponse{Status: &rpcstatus.Status{Code: 7}})
	seeds = append(seeds, append(first, second...))
	// Fields of the wrong wire type are unknown fields: a status that is
	// a varint, a code that is a fixed64.
	status := protowire.AppendTag(nil, checkResponseStatus, protowire.VarintType)
	seeds = append(seeds, protowire.AppendVarint(status, 1))
	code := protowire.AppendTag(nil, statusCode, protowire.Fixed64Type)
	code = protowire.AppendFixed64(code, 3)
	status = protowire.AppendTag(nil, checkResponseStatus, protowire.BytesType)
	seeds = append(seeds, protowire.AppendBytes(status, code))
	return seeds
}

func fullAnswer(b []byte) (answer, error) {
	var a answer
	err := answerCodec{full: true}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &a)
	return a, err
}

// TestReadAnswerAgreesWithProto: reading the status off the wire gives
// what a full decode gives, and malformed answers are errors.
func TestReadAnswerAgreesWithProto(t *testing.T) {
	for i, b := range answerSeeds(t) {
		want, err := fullAnswer(b)
		if err != nil {
			t.Fatalf("seed %d: full decode: %v", i, err)
		}
		var got answer
		if err := readAnswer(b, &got); err != nil || got != want {
			t.Errorf("seed %d: readAnswer = %+v, %v; full decode %+v", i, got, err, want)
		}
	}
	ok := mustMarshal(t, answerLike(codes.OK))
	for name, b := range map[string][]byte{
		"truncated":                   ok[:len(ok)-1],
		"a lone tag":                  {0x0a},
		"a status longer than sent":   {0x0a, 0x05, 0x08, 0x01},
		"a truncated code in status":  {0x0a, 0x02, 0x08, 0x81},
		"an overlong varint":          {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"a field number out of range": {0x80, 0x80, 0x80, 0x80, 0x10, 0x00},
		"a status message not UTF-8":  {0x0a, 0x05, 0x08, 0x10, 0x12, 0x01, 0xff},
	} {
		var a answer
		if err := readAnswer(b, &a); err == nil {
			t.Errorf("%s: readAnswer accepted % x as %+v", name, b, a)
		}
		if _, err := fullAnswer(b); err == nil {
			t.Errorf("%s: proto accepts % x: the case is wrong", name, b)
		}
	}
}

// TestReadAnswerAllocations: reading an allow costs the client nothing
// on the heap; that is what the status-only decode is for.
func TestReadAnswerAllocations(t *testing.T) {
	data := mem.BufferSlice{mem.SliceBuffer(mustMarshal(t, answerLike(codes.OK)))}
	var a answer
	if n := testing.AllocsPerRun(100, func() {
		if err := (answerCodec{}).Unmarshal(data, &a); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocations per answer read, want 0", n)
	}
}

// FuzzReadAnswer: whatever proto decodes, readAnswer reads alike.
func FuzzReadAnswer(f *testing.F) {
	for _, b := range answerSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got answer
		gotErr := readAnswer(b, &got)
		want, err := fullAnswer(b)
		if err == nil && (gotErr != nil || got != want) {
			t.Fatalf("readAnswer(% x) = %+v, %v; proto decodes %+v", b, got, gotErr, want)
		}
	})
}
